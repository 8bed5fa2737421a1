package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// ReadNodeConfig configures the read-node benchmark.
type ReadNodeConfig struct {
	ServerURL, RedisURL, ClickHouseURL string
	MaxConns                           int32
	// Writes is the write rate offered to serve throughout (default 100/s).
	Writes float64
	// ReadWorkers read as fast as they can, closed loop (default 32).
	ReadWorkers      int
	Warmup, Duration time.Duration
	SKUs, Queries    int
	ReadMix          Mix
	WriteMix         Mix
	Command          string
	Log              io.Writer
}

// readNodeRun is one measured window.
type readNodeRun struct {
	label        string
	reads, fails int64
	writes       int64
	window       time.Duration
	cores        float64 // CPU of the measured process, in cores
	serveCores   float64
	load         float64 // one-minute load average at the window's end
}

func (r readNodeRun) readsPerSec() float64 { return float64(r.reads) / r.window.Seconds() }

func (r readNodeRun) perCore() float64 {
	if r.cores <= 0 {
		return 0
	}
	return r.readsPerSec() / r.cores
}

// ReadNode measures one read node (`jetcqrs query-api` with REDIS_URL and
// CLICKHOUSE_URL none, keeping every model itself) beside `jetcqrs serve`:
// the CPU the node spends applying the stream while serve takes cfg.Writes
// writes/s, and its reads/s per core under the mixed workload's read mix
// with those writes going on; and, side by side, serve's own reads/s per
// core under the same load.
func ReadNode(ctx context.Context, cfg ReadNodeConfig) (string, error) {
	if cfg.Writes <= 0 {
		cfg.Writes = 100
	}
	if cfg.ReadWorkers <= 0 {
		cfg.ReadWorkers = 32
	}
	mcfg := MixedConfig{ServerURL: cfg.ServerURL, RedisURL: cfg.RedisURL, ClickHouseURL: cfg.ClickHouseURL,
		MaxConns: cfg.MaxConns, SKUs: cfg.SKUs, Queries: cfg.Queries, ReadMix: cfg.ReadMix, WriteMix: cfg.WriteMix, Log: cfg.Log,
		Warmup: cfg.Warmup, Duration: cfg.Duration, scratchName: "jetcqrs_bench_readnode"}
	mcfg.defaults()
	sys, err := startChildSystem(ctx, mcfg)
	if err != nil {
		return "", err
	}
	defer sys.cleanup()
	catalog := mixedCatalog(mcfg.SKUs, "RN-")
	queries := newQueryTable(mcfg.Queries)
	writer, err := newMixedClient(sys.base, []byte(sys.secret), catalog, queries, 64)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(cfg.Log, "seeding %d products\n", len(catalog))
	if err := writer.seed(ctx, 4); err != nil {
		return "", fmt.Errorf("seed: %w", err)
	}
	if err := writer.prime(ctx, 300, 4); err != nil {
		return "", err
	}

	node, err := startReadNodeChild(ctx, sys)
	if err != nil {
		return "", err
	}
	defer node.stop()
	reader, err := newMixedClient(node.base, []byte(sys.secret), catalog, queries, cfg.ReadWorkers+8)
	if err != nil {
		return "", err
	}
	reader.readable = writer.readable
	serveReader, err := newMixedClient(sys.base, []byte(sys.secret), catalog, queries, cfg.ReadWorkers+8)
	if err != nil {
		return "", err
	}
	serveReader.readable = writer.readable

	apply := readNodeStep(ctx, cfg, mcfg, writer, nil, node.pid, sys.pid, "read node applying")
	onNode := readNodeStep(ctx, cfg, mcfg, writer, reader, node.pid, sys.pid, "reads on the read node")
	onServe := readNodeStep(ctx, cfg, mcfg, writer, serveReader, sys.pid, sys.pid, "reads on serve")
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return readNodeSection(cfg, mcfg, apply, onNode, onServe), nil
}

// readNodeChild is the read node run as a child process.
type readNodeChild struct {
	base string
	pid  int
	stop func()
}

func startReadNodeChild(ctx context.Context, sys *childSystem) (*readNodeChild, error) {
	bin := filepath.Join(filepath.Dir(sys.dataDir), "jetcqrs")
	pw, err := jnats.ReadPassword(filepath.Join(sys.dataDir, "nats-password"))
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(filepath.Dir(sys.dataDir), "readnode")
	logPath := filepath.Join(filepath.Dir(sys.dataDir), "readnode.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "query-api", "--nats-url=nats://127.0.0.1:"+strconv.Itoa(sys.natsPort),
		"--nats-user="+jnats.EmbeddedUser, "--nats-password="+pw, "--redis-url=none", "--clickhouse-url=none",
		"--elasticsearch-url=", "--data-dir="+dir, "--jwt-secret="+sys.secret,
		"--http-addr=127.0.0.1:"+strconv.Itoa(port), "--log-level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the read node: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited); logFile.Close() }()
	n := &readNodeChild{base: "http://127.0.0.1:" + strconv.Itoa(port), pid: cmd.Process.Pid, stop: func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}}
	start := time.Now()
	if err := ready(ctx, &http.Client{Timeout: 5 * time.Second}, n.base, 5*time.Minute, exited); err != nil {
		n.stop()
		return nil, fmt.Errorf("read node: %w; its log ends:\n%s", err, tail(logPath, 20))
	}
	fmt.Fprintf(os.Stderr, "read node (pid %d) ready at %s after %s\n", n.pid, n.base, time.Since(start).Round(time.Millisecond))
	return n, nil
}

// readNodeStep offers writes to serve at cfg.Writes per second and, with
// reader set, reads through reader as fast as cfg.ReadWorkers can; it
// measures over cfg.Duration after cfg.Warmup the reads, and the CPU of pid
// and of serve.
func readNodeStep(ctx context.Context, cfg ReadNodeConfig, mcfg MixedConfig, writer, reader *mixedClient,
	pid, servePID int, label string) readNodeRun {
	fmt.Fprintf(cfg.Log, "%s: %.0f writes/s for %s\n", label, cfg.Writes, mcfg.Warmup+mcfg.Duration)
	run := readNodeRun{label: label, window: mcfg.Duration}
	total := mcfg.Warmup + mcfg.Duration
	start := time.Now()
	measureFrom, measureTo := start.Add(mcfg.Warmup), start.Add(total)
	inWindow := func() bool { now := time.Now(); return !now.Before(measureFrom) && now.Before(measureTo) }
	writes := newPicker(mcfg.WriteMix, writeOps)
	var reads, fails, wrote atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		openLoop(ctx, cfg.Writes, total, 2*time.Second, 16, func(ctx context.Context, a arrival) {
			rng := rand.New(rand.NewPCG(uint64(a.i), uint64(start.UnixNano())))
			_, w, err := writer.write(ctx, writes.pick(rng.Float64()), rng)
			if err == nil && w.reply.status/100 == 2 && inWindow() {
				wrote.Add(1)
			}
		}, func(arrival, time.Time) {})
	})
	if reader != nil {
		picker := newPicker(mcfg.ReadMix, readOps)
		for i := range cfg.ReadWorkers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(i), 0x4ead))
				z := mcfg.queriesZipf(reader, rng)
				for time.Now().Before(measureTo) && ctx.Err() == nil {
					r, err := reader.read(ctx, picker.pick(rng.Float64()), rng, z)
					if !inWindow() {
						continue
					}
					if err == nil && r.status == http.StatusOK {
						reads.Add(1)
					} else {
						fails.Add(1)
					}
				}
			})
		}
	}
	wg.Go(func() {
		sleepUntil(ctx, measureFrom)
		c0, ok0 := processCPU(pid)
		s0, sok0 := processCPU(servePID)
		sleepUntil(ctx, measureTo)
		if l := loadAverage(); l != nil {
			run.load = *l
		}
		if c1, ok := processCPU(pid); ok && ok0 {
			run.cores = (c1 - c0).Seconds() / mcfg.Duration.Seconds()
		}
		if s1, ok := processCPU(servePID); ok && sok0 {
			run.serveCores = (s1 - s0).Seconds() / mcfg.Duration.Seconds()
		}
	})
	wg.Wait()
	run.reads, run.fails, run.writes = reads.Load(), fails.Load(), wrote.Load()
	fmt.Fprintf(cfg.Log, "%s: %.0f reads/s (%d failed), %.1f writes/s, %.3f cores (serve %.3f)\n", label,
		run.readsPerSec(), run.fails, float64(run.writes)/run.window.Seconds(), run.cores, run.serveCores)
	return run
}

// queriesZipf draws the searches of one reader worker.
func (c MixedConfig) queriesZipf(reader *mixedClient, rng *rand.Rand) queryDraw {
	z := reader.queries.zipf(rng)
	return func() string { return reader.queries.draw(z) }
}

// readNodeSection is the markdown of the figures.
func readNodeSection(cfg ReadNodeConfig, mcfg MixedConfig, apply, onNode, onServe readNodeRun) string {
	var b strings.Builder
	b.WriteString("## Read node: reads per core beside serve, and the CPU of applying the stream\n\n")
	fmt.Fprintf(&b, "Command: `%s`\n\nMachine: %s\n\n", cfg.Command, Machine())
	fmt.Fprintf(&b, "Writes offered to serve throughout: %.0f/s (mix %v); reads closed loop, %d workers, mix %v; "+
		"window %s after %s warm-up. CPU is the measured process's own (utime+stime from /proc), in cores.\n\n",
		cfg.Writes, mcfg.WriteMix, cfg.ReadWorkers, mcfg.ReadMix, mcfg.Duration, mcfg.Warmup)
	b.WriteString("| run | reads/s | failed reads | writes/s | CPU of the reader (cores) | CPU of serve (cores) | reads/s per core | machine load |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range []readNodeRun{apply, onNode, onServe} {
		fmt.Fprintf(&b, "| %s | %.0f | %d | %.1f | %.3f | %.3f | %.0f | %.2f |\n", r.label, r.readsPerSec(), r.fails,
			float64(r.writes)/r.window.Seconds(), r.cores, r.serveCores, r.perCore(), r.load)
	}
	w := float64(apply.writes) / apply.window.Seconds()
	if w > 0 {
		fmt.Fprintf(&b, "\nApplying the stream costs the read node %.3f cores at %.1f writes/s: %.2f ms of CPU per write.\n",
			apply.cores, w, apply.cores*1000/w)
	}
	return b.String()
}
