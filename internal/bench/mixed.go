package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/redis/go-redis/v9"
)

// Rate is an offered load: writes and reads per second.
type Rate struct {
	Writes float64 `json:"writes_per_s"`
	Reads  float64 `json:"reads_per_s"`
}

func (r Rate) String() string {
	return strconv.FormatFloat(r.Writes, 'f', -1, 64) + "+" + strconv.FormatFloat(r.Reads, 'f', -1, 64)
}

// ParseRates reads "5+500,10+1000": writes/s+reads/s, separated by commas.
func ParseRates(s string) ([]Rate, error) {
	var out []Rate
	for _, f := range strings.Split(s, ",") {
		w, r, ok := strings.Cut(strings.TrimSpace(f), "+")
		wv, err1 := strconv.ParseFloat(w, 64)
		rv, err2 := strconv.ParseFloat(r, 64)
		if !ok || err1 != nil || err2 != nil || wv < 0 || rv < 0 || wv+rv == 0 {
			return nil, fmt.Errorf("want writes/s+reads/s pairs separated by commas, got %q", f)
		}
		out = append(out, Rate{wv, rv})
	}
	return out, nil
}

// mixedChildTarget names the system the benchmark starts itself.
const mixedChildTarget = "jetcqrs serve started by the benchmark"

// The seed's bounds, which a step of the ladder meets or not.
const (
	boundReadP99  = 5 * time.Millisecond
	boundWriteP99 = 20 * time.Millisecond
	boundLagP99   = 100 * time.Millisecond
)

// MixedConfig configures the mixed-workload benchmark.
type MixedConfig struct {
	// URL is a running deployment to measure, and Secret its JWT secret,
	// with which the benchmark signs its own tokens. Empty URL: the
	// benchmark builds the server, runs `jetcqrs serve` as a child process
	// on scratch stores (ServerURL, RedisURL, ClickHouseURL) and measures
	// the raw baseline too.
	URL, Secret   string
	ServerURL     string
	RedisURL      string
	ClickHouseURL string
	MaxConns      int32
	// Ladder is the offered loads, each run for Warmup (not measured) and
	// then Duration (default 5+500 … 100+10000; 2 s and 20 s).
	Ladder           []Rate
	Warmup, Duration time.Duration
	// scratchName names the scratch stores of the system a benchmark starts
	// (default mixedName), so that benchmarks running at once do not share them.
	scratchName string
	// Saturation is the offered load of the side-by-side saturation runs
	// of the system and the raw baseline (default 100+10000, beyond what
	// either serves on a small machine); zero skips them. They need the
	// child system.
	Saturation Rate
	// ReadMix and WriteMix default to DefaultReadMix and DefaultWriteMix.
	ReadMix, WriteMix Mix
	// SKUs is the catalog size (default 1000), Queries the number of
	// distinct searches (default 2000).
	SKUs, Queries int
	// LagSample is the share of writes followed into the read model
	// (default 1: all of them).
	LagSample float64
	// ReadWorkers and WriteWorkers bound the requests in flight (default
	// 256 and 64); arrivals beyond them queue and their wait counts.
	ReadWorkers, WriteWorkers int
	// JSONPath and PlotPath receive the figures and the plot; empty: not
	// written.
	JSONPath, PlotPath string
	// Command is the command line recorded with the figures.
	Command string
	Log     io.Writer
}

func (c *MixedConfig) defaults() {
	if len(c.Ladder) == 0 {
		c.Ladder = []Rate{{5, 500}, {10, 1000}, {20, 2000}, {50, 5000}, {100, 10000}}
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Duration == 0 {
		c.Duration = 20 * time.Second
	}
	if c.ReadMix == nil {
		c.ReadMix = DefaultReadMix
	}
	if c.WriteMix == nil {
		c.WriteMix = DefaultWriteMix
	}
	if c.SKUs == 0 {
		c.SKUs = 1000
	}
	if c.Queries == 0 {
		c.Queries = 2000
	}
	if c.LagSample == 0 {
		c.LagSample = 1
	}
	if c.ReadWorkers == 0 {
		c.ReadWorkers = 256
	}
	if c.WriteWorkers == 0 {
		c.WriteWorkers = 64
	}
	if c.MaxConns == 0 {
		c.MaxConns = 20
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// StepResult is one offered load's figures.
type StepResult struct {
	Label   string               `json:"label"`
	Offered Rate                 `json:"offered"`
	Window  float64              `json:"measured_s"`
	Ops     map[string]OpSummary `json:"ops"`
	Reads   OpSummary            `json:"reads"`
	Writes  OpSummary            `json:"writes"`
	Lag     OpSummary            `json:"lag"`
	// ServerCores is the CPU the server process used (cores), when the
	// benchmark started it; LoadCores the benchmark process's own.
	ServerCores *float64 `json:"server_cores,omitempty"`
	LoadCores   *float64 `json:"load_generator_cores,omitempty"`
	// CacheHitRatio is hits / (hits + misses) of the server's cache
	// counters in /metrics, when it has any.
	CacheHitRatio *float64 `json:"cache_hit_ratio,omitempty"`
	// LoadAverage is the machine's one-minute load average at the end of
	// the window: above the core count, other work competed for the CPU.
	LoadAverage *float64 `json:"load_average,omitempty"`
	Missed      []string `json:"missed_bounds,omitempty"`
}

// MixedResult is everything the benchmark measured.
type MixedResult struct {
	Command    string       `json:"command"`
	Machine    string       `json:"machine"`
	Target     string       `json:"target"`
	ReadMix    Mix          `json:"read_mix"`
	WriteMix   Mix          `json:"write_mix"`
	Ladder     []StepResult `json:"ladder"`
	Best       string       `json:"highest_rate_within_bounds,omitempty"`
	Saturation []StepResult `json:"saturation,omitempty"`
}

// Mixed runs the mixed workload against a deployment (cfg.URL) or a
// `jetcqrs serve` it starts, up a ladder of offered loads, and reports
// the highest that meets the seed's bounds; with the child system it then
// saturates the system and the raw baseline side by side. It writes the
// JSON and the plot and returns the markdown section.
func Mixed(ctx context.Context, cfg MixedConfig) (string, error) {
	cfg.defaults()
	res := MixedResult{Command: cfg.Command, Machine: Machine(), ReadMix: cfg.ReadMix, WriteMix: cfg.WriteMix}
	catalog := mixedCatalog(cfg.SKUs, "MX-")
	queries := newQueryTable(cfg.Queries)

	base, secret := cfg.URL, cfg.Secret
	var sys *childSystem
	if base == "" {
		var err error
		if sys, err = startChildSystem(ctx, cfg); err != nil {
			return "", err
		}
		defer sys.cleanup()
		base, secret = sys.base, sys.secret
		res.Target = mixedChildTarget
	} else {
		res.Target = base
	}
	client, err := newMixedClient(base, []byte(secret), catalog, queries, cfg.ReadWorkers+cfg.WriteWorkers+64)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(cfg.Log, "seeding %d products\n", len(catalog))
	if err := client.seed(ctx, 16); err != nil {
		return "", fmt.Errorf("seed: %w", err)
	}
	if err := client.prime(ctx, 300, 16); err != nil {
		return "", err
	}
	pid := 0
	if sys != nil {
		pid = sys.pid
	}
	for _, rate := range cfg.Ladder {
		step := runStep(ctx, cfg, client, pid, rate, "jetcqrs "+rate.String())
		res.Ladder = append(res.Ladder, step)
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	for _, s := range res.Ladder {
		if len(s.Missed) == 0 {
			res.Best = s.Offered.String()
		}
	}
	if sys != nil && cfg.Saturation.Reads+cfg.Saturation.Writes > 0 {
		sat, err := saturate(ctx, cfg, client, sys)
		if err != nil {
			return "", err
		}
		res.Saturation = sat
	}
	if cfg.JSONPath != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := writeFile(cfg.JSONPath, append(b, '\n')); err != nil {
			return "", err
		}
	}
	if cfg.PlotPath != "" {
		if err := plotMixed(res, cfg.PlotPath); err != nil {
			return "", fmt.Errorf("plot: %w", err)
		}
	}
	return mixedSection(cfg, res), nil
}

func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// saturate offers cfg.Saturation to the system, stops it, and offers the
// same to the raw baseline on the stores the system left.
func saturate(ctx context.Context, cfg MixedConfig, client *mixedClient, sys *childSystem) ([]StepResult, error) {
	// Saturation runs need no lag: the consistency waits would add reads.
	scfg := cfg
	scfg.LagSample = -1
	system := runStep(ctx, scfg, client, sys.pid, cfg.Saturation, "jetcqrs at saturation")
	if err := sys.stop(); err != nil {
		return nil, err
	}
	catalogDir, prefix, err := sys.generation()
	if err != nil {
		return nil, err
	}
	idx, err := bleve.OpenUsing(catalogDir, map[string]any{"bolt_timeout": "10s"})
	if err != nil {
		return nil, fmt.Errorf("open the catalog index serve left: %w", err)
	}
	defer idx.Close()
	ropts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if o, ok := client.readable.pick(rand.New(rand.NewPCG(1, 1)), false); ok {
		if n, err := rdb.Exists(ctx, prefix+"order:"+o.id).Result(); err != nil || n != 1 {
			return nil, fmt.Errorf("baseline: order %s not under Redis prefix %s (%v)", o.id, prefix, err)
		}
	}
	pool, err := migratedPool(ctx, sys.dbURL, cfg.MaxConns)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	bare := &bareMixed{rdb: rdb, prefix: prefix, idx: idx, pool: pool}
	bareBase, stopBare, err := serve(bare.handler())
	if err != nil {
		return nil, err
	}
	defer stopBare()
	bc := *client
	bc.base = bareBase
	bc.payable = newOrderPool(20000)
	baseline := runStep(ctx, scfg, &bc, 0, cfg.Saturation, "bare baseline at saturation")
	return []StepResult{system, baseline}, nil
}

// runStep offers rate for cfg.Warmup + cfg.Duration and measures the
// Duration: reads and writes on two open-loop schedules, and each sampled
// write followed into the order model.
func runStep(ctx context.Context, cfg MixedConfig, c *mixedClient, pid int, rate Rate, label string) StepResult {
	stats := newStatsSet(append(append([]string{"lag"}, readOps...), writeOps...)...)
	reads, writes := newPicker(cfg.ReadMix, readOps), newPicker(cfg.WriteMix, writeOps)
	grace := min(cfg.Duration/2, 5*time.Second)
	total := cfg.Warmup + cfg.Duration
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	measureTo := measureFrom.Add(cfg.Duration)
	// done counts a success toward the throughput if it completed in the
	// window.
	done := func(op string, status int) {
		if now := time.Now(); status/100 == 2 && !now.Before(measureFrom) && now.Before(measureTo) {
			stats[op].complete()
		}
	}
	var live liveCounts
	var lagsStarted atomic.Int64 // for the progress line
	var lags sync.WaitGroup
	lagCtx, cancelLag := context.WithTimeout(ctx, total+grace+10*time.Second)
	defer cancelLag()

	outcome := func(r reply, err error, ctx context.Context) int {
		switch {
		case err == nil:
			return r.status
		case ctx.Err() != nil:
			return statusUnfinished
		default:
			return 0
		}
	}
	count := func(status int) {
		if status >= 200 && status < 300 {
			live.done.Add(1)
		} else {
			live.failed.Add(1)
		}
	}
	readOp := func(a arrival) (string, *rand.Rand) {
		rng := rand.New(rand.NewPCG(uint64(a.i), 0x5eed))
		return reads.pick(rng.Float64()), rng
	}
	writeOp := func(a arrival) (string, *rand.Rand) {
		rng := rand.New(rand.NewPCG(uint64(a.i), 0x3717e))
		return writes.pick(rng.Float64()), rng
	}
	abandon := func(pick func(arrival) (string, *rand.Rand)) func(arrival, time.Time) {
		return func(a arrival, at time.Time) {
			if !a.due.Before(measureFrom) {
				op, _ := pick(a)
				stats[op].record(at.Sub(a.due), statusUnsent)
			}
			live.failed.Add(1)
		}
	}

	var cpu0, load0 time.Duration
	var cpuOK, loadOK bool
	var hits0, misses0 float64
	var cacheOK bool
	var cores, loadCores, hitRatio, loadAvg *float64
	var wg sync.WaitGroup
	wg.Go(func() {
		// CPU and cache counters over the measured window only.
		sleepUntil(ctx, measureFrom)
		cpu0, cpuOK = processCPU(pid)
		load0, loadOK = processCPU(os.Getpid())
		hits0, misses0, cacheOK = cacheCounters(ctx, c.http, c.base)
		sleepUntil(ctx, measureTo)
		loadAvg = loadAverage()
		if cpu1, ok := processCPU(pid); ok && cpuOK && pid != 0 {
			v := (cpu1 - cpu0).Seconds() / cfg.Duration.Seconds()
			cores = &v
		}
		if load1, ok := processCPU(os.Getpid()); ok && loadOK {
			v := (load1 - load0).Seconds() / cfg.Duration.Seconds()
			loadCores = &v
		}
		if h1, m1, ok := cacheCounters(ctx, c.http, c.base); ok && cacheOK {
			if n := (h1 - hits0) + (m1 - misses0); n > 0 {
				v := (h1 - hits0) / n
				hitRatio = &v
			}
		}
	})
	due := func(r float64) int64 { return int64(min(time.Since(start), total).Seconds() * r) }
	stopProgress := progress(cfg.Log, label, 5*time.Second, func() string {
		return fmt.Sprintf("%d due, %d done, %d failed, %d lag checks", due(rate.Reads)+due(rate.Writes),
			live.done.Load(), live.failed.Load(), lagsStarted.Load())
	})
	if rate.Reads > 0 {
		wg.Go(func() {
			openLoop(ctx, rate.Reads, total, grace, cfg.ReadWorkers, func(ctx context.Context, a arrival) {
				op, rng := readOp(a)
				r, err := c.read(ctx, op, rng, func() string { return c.queries.draw(c.queries.zipf(rng)) })
				status := outcome(r, err, ctx)
				count(status)
				done(op, status)
				if !a.due.Before(measureFrom) {
					stats[op].record(time.Since(a.due), status)
				}
			}, abandon(readOp))
		})
	}
	if rate.Writes > 0 {
		wg.Go(func() {
			openLoop(ctx, rate.Writes, total, grace, cfg.WriteWorkers, func(ctx context.Context, a arrival) {
				op, rng := writeOp(a)
				op, w, err := c.write(ctx, op, rng)
				status := outcome(w.reply, err, ctx)
				count(status)
				done(op, status)
				measured := !a.due.Before(measureFrom)
				if measured {
					stats[op].record(time.Since(a.due), status)
				}
				if status/100 != 2 || w.reply.consistency == "" || rng.Float64() >= cfg.LagSample {
					return
				}
				lagsStarted.Add(1)
				lags.Go(func() {
					lag, status, err := c.follow(lagCtx, w)
					if err != nil {
						status = outcome(reply{}, err, lagCtx)
					}
					done("lag", status)
					if measured {
						stats["lag"].record(lag, status)
					}
				})
			}, abandon(writeOp))
		})
	}
	wg.Wait()
	lags.Wait()
	stopProgress()

	window := cfg.Duration
	out := StepResult{Label: label, Offered: rate, Window: window.Seconds(), Ops: map[string]OpSummary{},
		ServerCores: cores, LoadCores: loadCores, CacheHitRatio: hitRatio, LoadAverage: loadAvg}
	for _, op := range append(append([]string{}, readOps...), writeOps...) {
		if s := stats.summary(window, op); s.Offered > 0 {
			out.Ops[op] = s
		}
	}
	out.Reads = stats.summary(window, readOps...)
	out.Writes = stats.summary(window, writeOps...)
	out.Lag = stats.summary(window, "lag")
	out.Missed = missedBounds(out)
	fmt.Fprintf(cfg.Log, "%s: reads %.0f/s p50 %.2f p99 %.2f ms, writes %.0f/s p99 %.2f ms, lag p99 %.2f ms, %s\n",
		label, out.Reads.PerSec, out.Reads.P50, out.Reads.P99, out.Writes.PerSec, out.Writes.P99, out.Lag.P99,
		verdict(out.Missed))
	return out
}

// Statuses of operations that got no response.
const (
	statusUnsent     = -1 // still queued when the step ended
	statusUnfinished = -2 // in flight when the step ended
)

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// missedBounds lists the seed's bounds a step missed.
func missedBounds(s StepResult) []string {
	var missed []string
	msf := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	if s.Reads.Offered > 0 && s.Reads.P99 >= msf(boundReadP99) {
		missed = append(missed, fmt.Sprintf("read p99 %.2f ms ≥ %.0f", s.Reads.P99, msf(boundReadP99)))
	}
	if s.Writes.Offered > 0 && s.Writes.P99 >= msf(boundWriteP99) {
		missed = append(missed, fmt.Sprintf("write p99 %.2f ms ≥ %.0f", s.Writes.P99, msf(boundWriteP99)))
	}
	if s.Lag.Offered > 0 && s.Lag.P99 >= msf(boundLagP99) {
		missed = append(missed, fmt.Sprintf("lag p99 %.2f ms ≥ %.0f", s.Lag.P99, msf(boundLagP99)))
	}
	if s.Writes.Offered > 0 && s.Lag.Offered == 0 {
		missed = append(missed, "lag not measured")
	}
	refused := s.Reads.Offered - s.Reads.Done + s.Writes.Offered - s.Writes.Done + s.Lag.Offered - s.Lag.Done
	if refused > 0 {
		missed = append(missed, fmt.Sprintf("%d refused or unanswered", refused))
	}
	return missed
}

// mixedSection writes the markdown section.
func mixedSection(cfg MixedConfig, res MixedResult) string {
	var b strings.Builder
	b.WriteString("## Mixed workload: 100 reads per write, search included\n\n")
	fmt.Fprintf(&b, "`%s` on %s, against %s.\n\n", res.Command, res.Machine, res.Target)
	fmt.Fprintf(&b, "Reads: %s. Writes: %s.\n%d SKUs with names and descriptions drawn from a word list (one in ten\n",
		mixString(res.ReadMix, readOps), mixString(res.WriteMix, writeOps), cfg.SKUs)
	fmt.Fprintf(&b, "out of stock); searches of one or two words, some with a category, in-stock or price filter, drawn\n")
	fmt.Fprintf(&b, "Zipf-like from %d distinct combinations, with the category and price facets. %d customers place,\n", cfg.Queries, mixedUsers)
	b.WriteString("pay, cancel and read their own orders. Reads and writes arrive open loop at a fixed rate each;\n")
	b.WriteString("latency runs from each request's intended start, so time queued behind a slow system counts\n")
	b.WriteString("(no coordinated omission); requests still queued or in flight at the end of a step count as\n")
	b.WriteString("refused with the time they waited. Lag: after each write's response the benchmark GETs the order\n")
	b.WriteString("with the write's `X-Consistency-Token`, which the query API holds until the order model applied it;\n")
	b.WriteString("lag = that GET's response − the write's (one extra round trip included). Achieved = successes\n")
	b.WriteString("completed within the measured window, per second, whenever they were due. Server cores = the\n")
	b.WriteString("jetcqrs process's CPU over the window; machine load = the one-minute load average at its end (above\n")
	b.WriteString("the core count, other work competed for the CPU).\n")
	fmt.Fprintf(&b, "Each step: %s warm-up, then %s measured. Bounds: read p99 < %d ms, write p99 < %d ms,\n",
		cfg.Warmup, cfg.Duration, boundReadP99.Milliseconds(), boundWriteP99.Milliseconds())
	fmt.Fprintf(&b, "lag p99 < %d ms, nothing refused.\n\n", boundLagP99.Milliseconds())

	b.WriteString("| offered writes/s + reads/s | achieved | read p50 / p99 ms | write p50 / p99 ms | lag p50 / p99 ms | server cores | cache hit ratio | machine load | bounds |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, s := range res.Ladder {
		fmt.Fprintf(&b, "| %s | %.0f + %.0f | %.2f / %.2f | %.2f / %.2f | %s | %s | %s | %s | %s |\n", s.Offered, s.Writes.PerSec,
			s.Reads.PerSec, s.Reads.P50, s.Reads.P99, s.Writes.P50, s.Writes.P99, lagCell(s.Lag), optFloat(s.ServerCores),
			optFloat(s.CacheHitRatio), optFloat(s.LoadAverage), verdict(s.Missed))
	}
	if res.Best != "" {
		fmt.Fprintf(&b, "\nHighest offered load within the bounds: **%s** writes/s + reads/s.\n", res.Best)
	} else {
		b.WriteString("\nHighest offered load within the bounds: **none of the ladder**.\n")
	}
	b.WriteString("\nPer operation (latency in ms from the intended start; errors by HTTP status, `unsent` = still\n")
	b.WriteString("queued at the end, `unfinished` = in flight at the end, `transport` = no response):\n\n")
	b.WriteString("| step | operation | due in window | achieved/s | p50 | p90 | p99 | p99.9 | max | errors |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, s := range append(append([]StepResult{}, res.Ladder...), res.Saturation...) {
		for _, op := range append(append(append([]string{}, readOps...), writeOps...), "lag") {
			o, ok := s.Ops[op]
			if op == "lag" {
				o, ok = s.Lag, s.Lag.Offered > 0
			}
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %s |\n", s.Label, op, o.Offered,
				o.PerSec, o.P50, o.P90, o.P99, o.P999, o.Max, errorList(o.Errors))
		}
	}
	if len(res.Saturation) == 2 {
		sys, bare := res.Saturation[0], res.Saturation[1]
		b.WriteString("\nSaturation, side by side: the system, then the raw baseline — bare net/http handlers on the same\n")
		b.WriteString("paths making the same store calls on the stores the system left (HMGET for an order or a stock\n")
		b.WriteString("level, a Bleve document lookup for a product, one Bleve query with the same filters and facets\n")
		b.WriteString("for a search, one outbox INSERT for a write; no authentication, no consistency tokens), served\n")
		fmt.Fprintf(&b, "from the benchmark's process — both offered %s writes/s + reads/s. Server cores: the\n", sys.Offered)
		b.WriteString("jetcqrs process's CPU; for the baseline, the benchmark process's CPU less the load generator's\n")
		b.WriteString("share, estimated from the system run (its CPU per request times the baseline's requests).\n")
		b.WriteString("Redis and PostgreSQL are not counted for either.\n\n")
		b.WriteString("| server | achieved writes/s + reads/s | ops/s | server cores | ops/s per server core | machine load | ratio |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
		sysOps, bareOps := sys.Reads.PerSec+sys.Writes.PerSec, bare.Reads.PerSec+bare.Writes.PerSec
		var bareCores *float64
		if sys.LoadCores != nil && bare.LoadCores != nil && sysOps > 0 {
			v := *bare.LoadCores - *sys.LoadCores/sysOps*bareOps
			bareCores = &v
		}
		perCore := func(ops float64, cores *float64) (string, float64) {
			if cores == nil || *cores <= 0 {
				return "n/a", 0
			}
			return fmt.Sprintf("%.0f", ops / *cores), ops / *cores
		}
		sysCell, sysPC := perCore(sysOps, sys.ServerCores)
		bareCell, barePC := perCore(bareOps, bareCores)
		ratio := "n/a"
		if sysPC > 0 && barePC > 0 {
			ratio = fmt.Sprintf("%.2f", sysPC/barePC)
		}
		fmt.Fprintf(&b, "| bare baseline | %.0f + %.0f | %.0f | %s | %s | %s | 1.00 |\n", bare.Writes.PerSec, bare.Reads.PerSec, bareOps,
			optFloat(bareCores), bareCell, optFloat(bare.LoadAverage))
		fmt.Fprintf(&b, "| jetcqrs | %.0f + %.0f | %.0f | %s | %s | %s | %s |\n", sys.Writes.PerSec, sys.Reads.PerSec, sysOps,
			optFloat(sys.ServerCores), sysCell, optFloat(sys.LoadAverage), ratio)
		fmt.Fprintf(&b, "\nThroughput at saturation, jetcqrs / baseline, on the same machine: %.2f. Target: per core ≥ 0.5×\n",
			sysOps/max(bareOps, 1))
		fmt.Fprintf(&b, "the baseline: %s.\n", verdict(perCoreMissed(sysPC, barePC)))
	}
	if res.Target != mixedChildTarget && cfg.Saturation.Reads+cfg.Saturation.Writes > 0 {
		b.WriteString("\nNo saturation runs: the raw baseline reads the stores of a system the benchmark started itself.\n")
	}
	if cfg.PlotPath != "" {
		fmt.Fprintf(&b, "\n![mixed workload latency per operation and lag](%s)\n", plotLink(cfg.PlotPath))
	}
	return b.String()
}

func perCoreMissed(sys, bare float64) []string {
	switch {
	case sys == 0 || bare == 0:
		return []string{"CPU not measured"}
	case sys < 0.5*bare:
		return []string{fmt.Sprintf("%.2f×", sys/bare)}
	}
	return nil
}

// plotLink is the plot's path relative to docs/, where the section lives.
func plotLink(path string) string {
	if i := strings.Index(path, "docs/"); i >= 0 {
		return path[i+len("docs/"):]
	}
	return path
}

func lagCell(o OpSummary) string {
	if o.Offered == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f / %.2f", o.P50, o.P99)
}

func optFloat(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}

func mixString(m Mix, ops []string) string {
	total := 0.0
	for _, o := range ops {
		total += m[o]
	}
	var parts []string
	for _, o := range ops {
		if m[o] > 0 {
			parts = append(parts, fmt.Sprintf("%.0f%% %s", 100*m[o]/total, o))
		}
	}
	return strings.Join(parts, ", ")
}
