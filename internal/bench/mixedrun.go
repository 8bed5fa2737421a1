package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// arrival is one operation of an open-loop schedule: the i-th, due at due
// whatever happened to the ones before it.
type arrival struct {
	i   int64
	due time.Time
}

// openLoop offers operations at rate per second for total, open loop:
// arrival i is due at start + i/rate and waits in an unbounded queue for the
// first free of workers goroutines, so a slow system makes the queue, not the
// schedule, grow. do gets each arrival; its latency is to be taken from
// a.due, so time spent queued counts (no coordinated omission). Arrivals
// still queued grace after total are not sent: abandon gets them with the
// time they were given up, which bounds their latency from below. openLoop
// returns how many arrivals it scheduled, once every worker returned.
func openLoop(ctx context.Context, rate float64, total, grace time.Duration, workers int,
	do func(ctx context.Context, a arrival), abandon func(a arrival, at time.Time)) int64 {
	n := int64(math.Ceil(rate * total.Seconds()))
	queue := make(chan arrival, n+1)
	start := time.Now()
	hard := start.Add(total + grace)
	rctx, cancel := context.WithDeadline(ctx, hard)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for a := range queue {
				if now := time.Now(); now.After(hard) || rctx.Err() != nil {
					abandon(a, now)
					continue
				}
				do(rctx, a)
			}
		})
	}
	interval := float64(time.Second) / rate
	var i int64
	for i < n && ctx.Err() == nil {
		// Wake every millisecond and release everything due by now, each
		// with its own due time: finer sleeps are not kept by the runtime.
		elapsed := time.Since(start)
		for ; i < n && time.Duration(float64(i)*interval) <= elapsed; i++ {
			queue <- arrival{i: i, due: start.Add(time.Duration(float64(i) * interval))}
		}
		time.Sleep(time.Millisecond)
	}
	close(queue)
	wg.Wait()
	return i
}

// opStats is what one operation type did in a measured window.
type opStats struct {
	mu      sync.Mutex
	hist    *hdrhistogram.Histogram
	offered int64 // operations due in the window
	ok      int64 // of those, the ones that succeeded
	// completed counts successes that completed within the window,
	// whenever they were due: the throughput. A saturated server still
	// busy with operations due before the window completes many of them
	// in it, and few of those due in it.
	completed int64
	errors    map[string]int64 // by HTTP status, "transport", "unsent" or "unfinished"
}

func newOpStats() *opStats {
	return &opStats{hist: hdrhistogram.New(1, 120_000_000, 3), errors: map[string]int64{}}
}

// complete counts a success that completed within the window.
func (s *opStats) complete() {
	s.mu.Lock()
	s.completed++
	s.mu.Unlock()
}

// record counts one operation due in the window: status 2xx is a success, 0 a
// transport error; every outcome's latency enters the histogram, so a
// failure or an operation never sent is not a fast one left out.
func (s *opStats) record(latency time.Duration, status int) {
	us := max(latency.Microseconds(), 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.hist.RecordValue(us)
	s.offered++
	switch {
	case status >= 200 && status < 300:
		s.ok++
	case status == 0:
		s.errors["transport"]++
	case status == statusUnsent:
		s.errors["unsent"]++
	case status == statusUnfinished:
		s.errors["unfinished"]++
	default:
		s.errors[strconv.Itoa(status)]++
	}
}

// OpSummary is one operation's figures over a measured window. Latencies are
// in milliseconds from each operation's intended start.
type OpSummary struct {
	Offered int64            `json:"offered"`
	Done    int64            `json:"done"`
	PerSec  float64          `json:"achieved_per_s"` // successes completed in the window, per second
	P50     float64          `json:"p50_ms"`
	P90     float64          `json:"p90_ms"`
	P99     float64          `json:"p99_ms"`
	P999    float64          `json:"p99_9_ms"`
	Max     float64          `json:"max_ms"`
	Errors  map[string]int64 `json:"errors,omitempty"`
}

func summarize(hist *hdrhistogram.Histogram, offered, ok, completed int64, errs map[string]int64, window time.Duration) OpSummary {
	q := func(p float64) float64 { return float64(hist.ValueAtQuantile(p)) / 1000 }
	out := OpSummary{Offered: offered, Done: ok, PerSec: float64(completed) / window.Seconds(),
		P50: q(50), P90: q(90), P99: q(99), P999: q(99.9), Max: float64(hist.Max()) / 1000}
	if len(errs) > 0 {
		out.Errors = errs
	}
	return out
}

// statsSet is the stats of several operation types.
type statsSet map[string]*opStats

func newStatsSet(ops ...string) statsSet {
	s := statsSet{}
	for _, o := range ops {
		s[o] = newOpStats()
	}
	return s
}

// summary merges the stats of ops into one.
func (s statsSet) summary(window time.Duration, ops ...string) OpSummary {
	hist := hdrhistogram.New(1, 120_000_000, 3)
	var offered, ok, completed int64
	errs := map[string]int64{}
	for _, o := range ops {
		st := s[o]
		st.mu.Lock()
		hist.Merge(st.hist)
		offered += st.offered
		ok += st.ok
		completed += st.completed
		for k, v := range st.errors {
			errs[k] += v
		}
		st.mu.Unlock()
	}
	return summarize(hist, offered, ok, completed, errs, window)
}

// progress prints a line every few seconds while a step runs: how much was
// offered and done, the failures and the queue.
func progress(w io.Writer, label string, every time.Duration, line func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "  %s, %s: %s\n", label, time.Since(start).Round(time.Second), line())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// liveCounts are the running totals a progress line shows.
type liveCounts struct {
	done, failed atomic.Int64
}

// errorList writes errors as "503×3, transport×1", sorted.
func errorList(errs map[string]int64) string {
	if len(errs) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, errs[k])
	}
	return strings.Join(parts, ", ")
}
