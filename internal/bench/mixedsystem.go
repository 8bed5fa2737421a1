package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mixedName names the scratch database, ClickHouse database, replication
// slot and Redis prefix of the system the mixed benchmark starts.
const mixedName = "jetcqrs_bench_mixed"

// childSystem is `jetcqrs serve` run as a child process on scratch stores.
type childSystem struct {
	base, secret string
	pid          int
	natsPort     int // the embedded NATS server's
	dataDir      string
	dbURL        string
	redisPrefix  string
	logPath      string
	stop         func() error // stops serve (SIGTERM, then waits)
	cleanup      func()       // drops the scratch stores, after stop
}

// startChildSystem builds the server binary, creates scratch stores and
// runs `jetcqrs serve` on them until stop.
func startChildSystem(ctx context.Context, cfg MixedConfig) (_ *childSystem, err error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	name := cfg.scratchName
	if name == "" {
		name = mixedName
	}
	dir, err := os.MkdirTemp("", "jetcqrs-bench-mixed-*")
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = os.RemoveAll(dir) })
	bin := filepath.Join(dir, "jetcqrs")
	fmt.Fprintf(cfg.Log, "building the server binary\n")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/jetcqrs/jetcqrs/cmd/jetcqrs")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w: %s", err, out)
	}

	dbURL, dropDB, err := scratchReplicationDatabase(ctx, cfg.ServerURL, name)
	if err != nil {
		return nil, err
	}
	undo = append(undo, dropDB)
	prefix := name + ":"
	_, dropRedis, err := scratchRedis(ctx, cfg.RedisURL, prefix)
	if err != nil {
		return nil, err
	}
	undo = append(undo, dropRedis)
	_, dropCH, err := scratchClickHouse(ctx, cfg.ClickHouseURL, name)
	if err != nil {
		return nil, err
	}
	undo = append(undo, dropCH)
	chURL, err := url.Parse(cfg.ClickHouseURL)
	if err != nil {
		return nil, err
	}
	chURL.Path = "/" + name

	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	natsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s := &childSystem{base: "http://127.0.0.1:" + strconv.Itoa(httpPort), secret: hex.EncodeToString(secret),
		natsPort: natsPort, dataDir: filepath.Join(dir, "data"), dbURL: dbURL, redisPrefix: prefix, logPath: filepath.Join(dir, "serve.log")}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = logFile.Close() })

	// Flags, not the environment: they win over whatever the environment
	// of the benchmark holds.
	cmd := exec.Command(bin, "serve",
		"--database-url="+dbURL, "--db-max-conns="+strconv.Itoa(int(cfg.MaxConns)),
		"--redis-url="+cfg.RedisURL, "--redis-prefix="+prefix,
		"--clickhouse-url="+chURL.String(), "--elasticsearch-url=", "--nats-url=",
		"--nats-port="+strconv.Itoa(natsPort), "--data-dir="+s.dataDir, "--jwt-secret="+s.secret,
		"--http-addr=127.0.0.1:"+strconv.Itoa(httpPort), "--slot-name="+name,
		"--relay-mode=cdc", "--log-level=warn", "--log-format=text")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start serve: %w", err)
	}
	s.pid = cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	s.stop = func() error {
		select {
		case <-exited:
			return fmt.Errorf("serve had exited: %v", waitErr)
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			return nil
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("serve did not stop within 30s of SIGTERM")
		}
	}
	undo = append(undo, func() { _ = s.stop() })
	fmt.Fprintf(cfg.Log, "started jetcqrs serve (pid %d) at %s, log %s\n", s.pid, s.base, s.logPath)
	if err := ready(ctx, &http.Client{Timeout: 5 * time.Second}, s.base, 90*time.Second, exited); err != nil {
		return nil, fmt.Errorf("serve: %w; its log ends:\n%s", err, tail(s.logPath, 20))
	}
	s.cleanup = cleanup
	return s, nil
}

// catalogDir is the directory of the catalog index serve kept (its one
// generation), and the Redis prefix of the same generation.
func (s *childSystem) generation() (catalogDir, redisPrefix string, err error) {
	entries, err := os.ReadDir(filepath.Join(s.dataDir, "catalog"))
	if err != nil {
		return "", "", err
	}
	var gens []string
	for _, e := range entries {
		if e.IsDir() {
			gens = append(gens, e.Name())
		}
	}
	if len(gens) != 1 {
		return "", "", fmt.Errorf("want one catalog generation in %s, found %v", s.dataDir, gens)
	}
	return filepath.Join(s.dataDir, "catalog", gens[0]), s.redisPrefix + gens[0] + ":", nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if lines = append(lines, sc.Text()); len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// processCPU returns the CPU time (user and system) process pid has used,
// from /proc; ok is false where that is not readable.
func processCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. utime and stime are fields 14 and 15,
	// in clock ticks of 1/100 s on Linux.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}

// cacheCounters sums the counters of /metrics whose names say they count
// cache hits and misses (…cache…_hits_total, …cache…_misses_total); ok is
// false when the server exposes none.
func cacheCounters(ctx context.Context, client *http.Client, base string) (hits, misses float64, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, 0, false
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, false
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// name{labels} value: label values may hold spaces.
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			continue
		}
		metric, rest := line[:end], line[end:]
		if rest[0] == '{' {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		if !strings.Contains(metric, "cache") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasSuffix(metric, "_hits_total"):
			hits += v
			ok = true
		case strings.HasSuffix(metric, "_misses_total"):
			misses += v
			ok = true
		}
	}
	return hits, misses, ok
}

// loadAverage is the machine's one-minute load average, nil where
// /proc/loadavg is not readable.
func loadAverage() *float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return nil
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return nil
	}
	return &v
}
