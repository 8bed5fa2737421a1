// Package bench holds jetcqrs's benchmarks: each runs the system's path and a
// raw baseline (the same work done by the bare library) side by side in one
// run, and reports throughput ratios and latency percentiles. They are not
// timed tests; `jetcqrs-bench` runs them and records the figures in
// docs/benchmarks.md.
package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Recorder collects latencies from many goroutines.
type Recorder struct {
	mu   sync.Mutex
	hist *hdrhistogram.Histogram
	errs int64
}

// NewRecorder tracks latencies from 1 µs to 60 s with 3 significant digits.
func NewRecorder() *Recorder {
	return &Recorder{hist: hdrhistogram.New(1, 60_000_000, 3)}
}

// Observe records one operation's latency.
func (r *Recorder) Observe(d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	r.mu.Lock()
	_ = r.hist.RecordValue(us)
	r.mu.Unlock()
}

// Error counts a failed operation.
func (r *Recorder) Error() {
	r.mu.Lock()
	r.errs++
	r.mu.Unlock()
}

// Result summarizes a run.
type Result struct {
	Name    string
	Ops     int64
	Errors  int64
	Elapsed time.Duration
	P50     time.Duration
	P99     time.Duration
	Max     time.Duration
}

// Throughput is operations per second.
func (r Result) Throughput() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// Result returns the summary of what was observed over elapsed.
func (r *Recorder) Result(name string, elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Result{Name: name, Ops: r.hist.TotalCount(), Errors: r.errs, Elapsed: elapsed,
		P50: us(r.hist.ValueAtQuantile(50)), P99: us(r.hist.ValueAtQuantile(99)), Max: us(r.hist.Max())}
}

// Progress prints a line per interval while a long run goes on.
func Progress(w io.Writer, label string, every time.Duration, count func() int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "  %s: %d done after %s\n", label, count(), time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

// Machine describes where a benchmark ran.
func Machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %d CPUs, %s/%s, %s, %s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH,
		runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 MST"))
}

// WriteSection replaces the section named name in the markdown file at path
// (between <!-- bench:name:start --> and <!-- bench:name:end -->), appending it
// when absent, so each benchmark rewrites only its own figures.
func WriteSection(path, name, body string) error {
	start, end := "<!-- bench:"+name+":start -->", "<!-- bench:"+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	section := start + "\n" + strings.TrimRight(body, "\n") + "\n" + end
	s := string(old)
	i, j := strings.Index(s, start), strings.Index(s, end)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + section + s[j+len(end):]
	case s == "":
		s = "# Benchmarks\n\nRun them all with `make bench`; each section below is rewritten by its benchmark.\n\n" + section + "\n"
	default:
		s = strings.TrimRight(s, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// joinInts writes ns as "1, 2 and 3".
func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// verdict reads a target: "met", or "**not met**" with what missed it.
func verdict(missed []string) string {
	if len(missed) == 0 {
		return "met"
	}
	return "**not met**: " + strings.Join(missed, "; ")
}
