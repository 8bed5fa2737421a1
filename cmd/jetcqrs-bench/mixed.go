package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jetcqrs/jetcqrs/internal/bench"
)

// mixedFlags are the flags of the mixed-workload benchmark.
type mixedFlags struct {
	url, secret, ladder, saturation, readMix, writeMix, jsonPath, plotPath string
	warmup                                                                 time.Duration
	skus, queries                                                          int
	lagSample                                                              float64
}

func (f *mixedFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "url", "", "mixed: a running deployment to measure; empty builds and starts `jetcqrs serve` on scratch stores")
	fs.StringVar(&f.secret, "jwt-secret", os.Getenv("JWT_SECRET"), "mixed: the deployment's JWT secret, to sign the benchmark's tokens (with --url)")
	fs.StringVar(&f.ladder, "ladder", "5+500,10+1000,20+2000,50+5000,100+10000", "mixed: offered loads, writes/s+reads/s, in turn")
	fs.StringVar(&f.saturation, "saturation", "100+10000", "mixed: offered load of the side-by-side saturation runs (0+0 skips them)")
	fs.StringVar(&f.readMix, "read-mix", "order=40,product=25,inventory=20,search=15", "mixed: share of each read")
	fs.StringVar(&f.writeMix, "write-mix", "place=75,pay=20,cancel=5", "mixed: share of each write")
	fs.StringVar(&f.jsonPath, "json", "docs/bench/mixed.json", "mixed: file for the figures as JSON")
	fs.StringVar(&f.plotPath, "plot", "docs/bench/mixed.png", "mixed: file for the latency plot (PNG)")
	fs.DurationVar(&f.warmup, "warmup", 2*time.Second, "mixed: unmeasured start of each step")
	fs.IntVar(&f.skus, "skus", 1000, "mixed: catalog size")
	fs.IntVar(&f.queries, "queries", 2000, "mixed: distinct searches")
	fs.Float64Var(&f.lagSample, "lag-sample", 1, "mixed: share of writes followed into the read model")
}

// run runs the mixed benchmark; each step lasts --duration (20s unless
// given).
func (f *mixedFlags) run(cmd *cobra.Command, cfg *config, server string, duration time.Duration) (string, error) {
	ladder, err := bench.ParseRates(f.ladder)
	if err != nil {
		return "", fmt.Errorf("--ladder: %w", err)
	}
	var sat bench.Rate
	if f.saturation != "0+0" {
		s, err := bench.ParseRates(f.saturation)
		if err != nil || len(s) != 1 {
			return "", fmt.Errorf("--saturation: want one writes/s+reads/s pair, got %q", f.saturation)
		}
		sat = s[0]
	}
	readMix, err := bench.ParseMix(f.readMix, []string{"order", "product", "inventory", "search"})
	if err != nil {
		return "", fmt.Errorf("--read-mix: %w", err)
	}
	writeMix, err := bench.ParseMix(f.writeMix, []string{"place", "pay", "cancel"})
	if err != nil {
		return "", fmt.Errorf("--write-mix: %w", err)
	}
	if f.url != "" && f.secret == "" {
		return "", fmt.Errorf("--url needs --jwt-secret (or $JWT_SECRET)")
	}
	if !cmd.Flags().Changed("duration") {
		duration = 20 * time.Second
	}
	if f.lagSample <= 0 || f.lagSample > 1 {
		return "", fmt.Errorf("--lag-sample: want a share in (0, 1], got %g", f.lagSample)
	}
	return bench.Mixed(cmd.Context(), bench.MixedConfig{URL: f.url, Secret: f.secret, ServerURL: server,
		RedisURL: cfg.RedisURL, ClickHouseURL: cfg.ClickHouseURL, MaxConns: cfg.DBMaxConns,
		Ladder: ladder, Warmup: f.warmup, Duration: duration, Saturation: sat, ReadMix: readMix, WriteMix: writeMix,
		SKUs: f.skus, Queries: f.queries, LagSample: f.lagSample, JSONPath: f.jsonPath, PlotPath: f.plotPath,
		Command: commandLine(), Log: cmd.ErrOrStderr()})
}

// commandLine is how the benchmark was run, secrets left out.
func commandLine() string {
	args := []string{"go run ./cmd/jetcqrs-bench"}
	skip := false
	for _, a := range os.Args[1:] {
		switch {
		case skip:
			skip = false
		case a == "--jwt-secret":
			skip = true
		case strings.HasPrefix(a, "--jwt-secret="):
		default:
			args = append(args, a)
		}
	}
	return strings.Join(args, " ")
}
