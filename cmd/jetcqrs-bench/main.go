// Command jetcqrs-bench runs the benchmarks, each beside a raw baseline doing
// the same work with the bare libraries, and records the figures in
// docs/benchmarks.md. It lives apart from the server binary, which never
// compiles the benchmarks in.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetcqrs/jetcqrs/internal/bench"
	"github.com/jetcqrs/jetcqrs/internal/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := benchCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jetcqrs-bench:", err)
		os.Exit(1)
	}
}

// config is what the benchmarks take from the environment, under the same
// names the server reads.
type config struct {
	RedisURL      string
	ClickHouseURL string
	DBMaxConns    int32
}

func benchCmd() *cobra.Command {
	var out, server, clients, rates, cpuProfile string
	var duration time.Duration
	var readNodeWrites float64
	var readWorkers int
	var traced bool
	var tracing *telemetry.Tracing // nil: tracing off
	cfg := &config{}
	mixed := &mixedFlags{}
	cmd := &cobra.Command{
		Use:           "jetcqrs-bench [all|place-order|relay-drain|relay-latency|projection-apply|embedded-apply|query-get-order|end-to-end|rebuild|catalog-search|mixed|read-node|edge-catch-up]",
		Short:         "Run benchmarks against their raw baselines and record the figures in docs/benchmarks.md",
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			conc, err := parseInts(clients)
			if err != nil {
				return fmt.Errorf("--clients: %w", err)
			}
			var offered []int
			if cmd.Flags().Changed("rates") {
				if offered, err = parseInts(rates); err != nil {
					return fmt.Errorf("--rates: %w", err)
				}
			}
			log := cmd.ErrOrStderr()
			run := map[string]func() (string, error){
				"place-order": func() (string, error) {
					return bench.PlaceOrder(cmd.Context(), bench.PlaceOrderConfig{ServerURL: server, Duration: duration,
						Concurrency: conc, SKUs: 1000, MaxConns: cfg.DBMaxConns, Log: log})
				},
				// The backlog scales with --duration: 20,000 events per second of it
				// (200,000 by default: shorter drains vary too much from run to run).
				"relay-drain": func() (string, error) {
					return bench.RelayDrain(cmd.Context(), bench.RelayDrainConfig{ServerURL: server,
						Events: int(duration.Seconds() * 20000), Log: log})
				},
				// Nine runs: three pipelines at three loads.
				"relay-latency": func() (string, error) {
					return bench.RelayLatency(cmd.Context(), bench.RelayLatencyConfig{ServerURL: server,
						Rates: []int{100, 1000, 5000}, Duration: duration / 3, Tracing: tracing, Log: log})
				},
				// Eight runs: store and raw baseline for four read models.
				"projection-apply": func() (string, error) {
					return bench.ProjectionApply(cmd.Context(), bench.ProjectionApplyConfig{RedisURL: cfg.RedisURL,
						ClickHouseURL: cfg.ClickHouseURL, Duration: duration / 4, Log: log})
				},
				// Six runs: store and raw baseline for three embedded read models.
				"embedded-apply": func() (string, error) {
					return bench.EmbeddedApply(cmd.Context(), bench.EmbeddedApplyConfig{Duration: duration / 3, Log: log})
				},
				// Eight runs: API and bare handler at four concurrencies.
				"query-get-order": func() (string, error) {
					qc := []int{1, 4, 16, 64}
					if cmd.Flags().Changed("clients") {
						qc = conc
					}
					return bench.QueryGetOrder(cmd.Context(), bench.QueryGetOrderConfig{RedisURL: cfg.RedisURL,
						Duration: duration / 2, Concurrency: qc, Log: log})
				},
				// Eight runs: a rebuild and a bare ordered consumer for four read models.
				"rebuild": func() (string, error) {
					return bench.Rebuild(cmd.Context(), bench.RebuildConfig{RedisURL: cfg.RedisURL,
						ClickHouseURL: cfg.ClickHouseURL, Events: int(duration.Seconds() * 3000), Log: log})
				},
				// Six runs: the system and the bare chain at three loads.
				"end-to-end": func() (string, error) {
					return bench.EndToEnd(cmd.Context(), bench.EndToEndConfig{ServerURL: server, RedisURL: cfg.RedisURL,
						ClickHouseURL: cfg.ClickHouseURL, Rates: offered, Duration: duration, MaxConns: cfg.DBMaxConns,
						Tracing: tracing, Log: log})
				},
				// Nine runs: bare query, store with and without its cache, on a still
				// index and at two write rates.
				"catalog-search": func() (string, error) {
					return bench.CatalogSearch(cmd.Context(), bench.CatalogSearchConfig{Duration: duration / 9, Log: log})
				},
				// The ladder, then the system and the bare baseline at saturation.
				"mixed": func() (string, error) {
					return mixed.run(cmd, cfg, server, duration)
				},
				// Both links of two edges cut under publishes, then a bare mirror's
				// and an edge read node's catch-up.
				"edge-catch-up": func() (string, error) {
					return bench.EdgeCatchUp(cmd.Context(), bench.EdgeCatchUpConfig{Events: int(duration.Seconds() * 5000), Log: log})
				},
				// Three runs of --duration each: the read node applying the stream,
				// reads on the read node, reads on serve; writes go on throughout.
				"read-node": func() (string, error) {
					readMix, err := bench.ParseMix(mixed.readMix, []string{"order", "product", "inventory", "search"})
					if err != nil {
						return "", fmt.Errorf("--read-mix: %w", err)
					}
					writeMix, err := bench.ParseMix(mixed.writeMix, []string{"place", "pay", "cancel"})
					if err != nil {
						return "", fmt.Errorf("--write-mix: %w", err)
					}
					return bench.ReadNode(cmd.Context(), bench.ReadNodeConfig{ServerURL: server, RedisURL: cfg.RedisURL,
						ClickHouseURL: cfg.ClickHouseURL, MaxConns: cfg.DBMaxConns, Writes: readNodeWrites,
						ReadWorkers: readWorkers, Warmup: mixed.warmup, Duration: duration, SKUs: mixed.skus,
						Queries: mixed.queries, ReadMix: readMix, WriteMix: writeMix, Command: commandLine(), Log: log})
				},
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			names := []string{args[0]}
			if args[0] == "all" {
				names = []string{"place-order", "relay-drain", "relay-latency", "projection-apply", "embedded-apply", "query-get-order", "end-to-end", "rebuild", "catalog-search"}
			}
			if traced {
				sink, err := bench.StartOTLPSink()
				if err != nil {
					return err
				}
				defer sink.Stop()
				if tracing, err = sink.Tracing(cmd.Context()); err != nil {
					return err
				}
				defer func() {
					_ = tracing.Shutdown(context.WithoutCancel(cmd.Context()))
					fmt.Fprintf(log, "tracing: the receiver got %d spans\n", sink.Spans())
				}()
			}
			for _, name := range names {
				fn, ok := run[name]
				if !ok {
					return fmt.Errorf("unknown benchmark %q", name)
				}
				fmt.Fprintf(log, "benchmark %s\n", name)
				section, err := fn()
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				fmt.Fprintln(cmd.OutOrStdout(), section)
				if err := bench.WriteSection(out, name, section); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "docs/benchmarks.md", "markdown file to record results in")
	cmd.Flags().StringVar(&server, "server-url", envOr("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL server that gets scratch databases")
	cmd.Flags().StringVar(&clients, "clients", "1,4,16", "client concurrencies (query-get-order defaults to 1,4,16,64)")
	cmd.Flags().StringVar(&rates, "rates", "", "offered loads of end-to-end in orders/s (default 250,500,1000)")
	cmd.Flags().BoolVar(&traced, "tracing", false, "trace relay-latency and end-to-end, exporting over OTLP/gRPC to a receiver in this process")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	cmd.Flags().StringVar(&cfg.RedisURL, "redis-url", envOr("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis for the read-model benchmarks")
	cmd.Flags().StringVar(&cfg.ClickHouseURL, "clickhouse-url", envOr("CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default"),
		"ClickHouse (native protocol) for the sales benchmarks")
	cmd.Flags().Int32Var(&cfg.DBMaxConns, "db-max-conns", 20, "PostgreSQL pool size of the system under test")
	mixed.bind(cmd.Flags())
	cmd.Flags().Float64Var(&readNodeWrites, "read-node-writes", 100, "read-node: writes/s offered to serve throughout")
	cmd.Flags().IntVar(&readWorkers, "read-workers", 32, "read-node: closed-loop readers")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "length of each measured run; benchmarks made of many runs share it out (each section says how)")
	return cmd
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("want positive integers separated by commas, got %q", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
