package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
)

func TestMixedQueryTableIsZipfOverManyDistinctSearches(t *testing.T) {
	t.Parallel()
	table := newQueryTable(2000)
	seen := map[string]bool{}
	var withCategory, inStock, priced, twoWords int
	for _, p := range table.paths {
		if seen[p] {
			t.Fatalf("search %s twice", p)
		}
		seen[p] = true
		u, err := url.Parse(p)
		if err != nil || u.Path != "/v1/products" {
			t.Fatalf("search path %q: %v", p, err)
		}
		q := u.Query()
		words := strings.Fields(q.Get("q"))
		if len(words) < 1 || len(words) > 2 {
			t.Fatalf("search %s has %d words, want 1 or 2", p, len(words))
		}
		if len(words) == 2 {
			twoWords++
		}
		if q.Get("category") != "" {
			withCategory++
		}
		if q.Get("in_stock") == "true" {
			inStock++
		}
		if q.Get("min_price") != "" || q.Get("max_price") != "" {
			priced++
		}
	}
	if len(seen) < 1000 {
		t.Fatalf("%d distinct searches, want at least 1000", len(seen))
	}
	for name, n := range map[string]int{"two words": twoWords, "category": withCategory, "in stock": inStock, "price": priced} {
		if n < len(seen)/10 {
			t.Errorf("%d of %d searches with %s, want at least a tenth", n, len(seen), name)
		}
	}

	// Drawn Zipf-like: the most popular search far more often than the
	// middle one, and most searches drawn at some point.
	z := table.zipf(rand.New(rand.NewPCG(1, 2)))
	counts := map[string]int{}
	for range 200000 {
		counts[table.draw(z)]++
	}
	if len(counts) < 1000 {
		t.Errorf("200,000 draws hit %d distinct searches, want at least 1000", len(counts))
	}
	if top, mid := counts[table.paths[0]], counts[table.paths[1000]]; top < 20*max(mid, 1) {
		t.Errorf("rank 0 drawn %d times, rank 1000 %d: not Zipf-like", top, mid)
	}
}

func TestMixedSearchesMatchTheCatalog(t *testing.T) {
	t.Parallel()
	text := map[string]bool{}
	for _, p := range mixedCatalog(1000, "MX-") {
		for _, w := range strings.Fields(p.Name + " " + p.Description) {
			text[w] = true
		}
	}
	table := newQueryTable(2000)
	missing := 0
	for _, p := range table.paths {
		u, _ := url.Parse(p)
		for _, w := range strings.Fields(u.Query().Get("q")) {
			if !text[w] {
				missing++
			}
		}
	}
	if missing > len(table.paths)/20 {
		t.Errorf("%d search words occur in no product, want at most %d", missing, len(table.paths)/20)
	}
}

func TestMixedPickerKeepsTheMixProportions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mix Mix
		ops []string
	}{
		{DefaultReadMix, readOps},
		{DefaultWriteMix, writeOps},
		{Mix{opOrder: 1, opSearch: 3}, readOps},
	} {
		p := newPicker(tc.mix, tc.ops)
		rng := rand.New(rand.NewPCG(3, 4))
		const n = 200000
		got := map[string]int{}
		for range n {
			got[p.pick(rng.Float64())]++
		}
		total := 0.0
		for _, o := range tc.ops {
			total += tc.mix[o]
		}
		for _, o := range tc.ops {
			want := tc.mix[o] / total
			if share := float64(got[o]) / n; math.Abs(share-want) > 0.005 {
				t.Errorf("mix %v: %s drawn %.4f of the time, want %.4f", tc.mix, o, share, want)
			}
		}
	}
}

func TestParseMixAndRates(t *testing.T) {
	t.Parallel()
	m, err := ParseMix("order=40,product=25,inventory=20,search=15", readOps)
	if err != nil || m[opSearch] != 15 {
		t.Fatalf("ParseMix = %v, %v", m, err)
	}
	for _, bad := range []string{"order=40,bogus=2", "order", "order=-1", "order=0"} {
		if _, err := ParseMix(bad, readOps); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
	r, err := ParseRates("5+500, 100+10000")
	if err != nil || len(r) != 2 || r[1] != (Rate{100, 10000}) || r[0].String() != "5+500" {
		t.Fatalf("ParseRates = %v, %v", r, err)
	}
	for _, bad := range []string{"5", "5+x", "0+0", "-1+5"} {
		if _, err := ParseRates(bad); err == nil {
			t.Errorf("ParseRates(%q) accepted", bad)
		}
	}
}

// TestOpenLoopMeasuresFromIntendedStart stalls the one worker on the first
// operation: the operations due meanwhile wait, and their latency counts
// from when they were due, not from when they got a worker.
func TestOpenLoopMeasuresFromIntendedStart(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var lat []time.Duration
	n := openLoop(context.Background(), 200, time.Second, 5*time.Second, 1, func(_ context.Context, a arrival) {
		if a.i == 0 {
			time.Sleep(300 * time.Millisecond)
		}
		mu.Lock()
		lat = append(lat, time.Since(a.due))
		mu.Unlock()
	}, func(a arrival, _ time.Time) { t.Errorf("arrival %d abandoned", a.i) })
	if n != 200 || len(lat) != 200 {
		t.Fatalf("scheduled %d, ran %d, want 200 each", n, len(lat))
	}
	slow := 0
	for _, l := range lat {
		if l >= 100*time.Millisecond {
			slow++
		}
	}
	// Arrivals due in the first 200 ms (40 of them) waited at least
	// 100 ms for the worker; timed from their start, only the first would.
	if slow < 30 {
		t.Errorf("%d operations took ≥ 100 ms from their intended start, want ≥ 30", slow)
	}
}

// TestOpenLoopAbandonsWhatIsStillQueued: a worker too slow for the rate
// leaves arrivals queued at the end; they are handed to abandon with a
// latency of at least the time they waited.
func TestOpenLoopAbandonsWhatIsStillQueued(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	ran, abandoned := 0, 0
	start := time.Now()
	n := openLoop(context.Background(), 100, 500*time.Millisecond, 0, 1, func(context.Context, arrival) {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		ran++
		mu.Unlock()
	}, func(a arrival, at time.Time) {
		if at.Before(start.Add(500 * time.Millisecond)) {
			t.Errorf("arrival %d abandoned at %s, before the end", a.i, at.Sub(start))
		}
		mu.Lock()
		abandoned++
		mu.Unlock()
	})
	if int64(ran+abandoned) != n || n != 50 || abandoned < 30 {
		t.Fatalf("scheduled %d, ran %d, abandoned %d: want 50 = ran + abandoned, most abandoned", n, ran, abandoned)
	}
}

func TestOpStatsCountsEveryOutcome(t *testing.T) {
	t.Parallel()
	s := newStatsSet(opOrder, opSearch)
	s[opOrder].record(2*time.Millisecond, 200)
	s[opOrder].record(3*time.Millisecond, 503)
	s[opSearch].record(time.Second, statusUnsent)
	s[opSearch].record(time.Millisecond, 0)
	s[opSearch].record(time.Millisecond, statusUnfinished)
	sum := s.summary(time.Second, opOrder, opSearch)
	if sum.Offered != 5 || sum.Done != 1 || sum.Max < 999 {
		t.Fatalf("summary %+v", sum)
	}
	if got := errorList(sum.Errors); got != "503×1, transport×1, unfinished×1, unsent×1" {
		t.Errorf("errors %q", got)
	}
	step := StepResult{Reads: sum}
	if missed := missedBounds(step); len(missed) != 2 {
		t.Errorf("missed %v, want read p99 and refused", missed)
	}
}

// TestMixedRunsAgainstServe runs the whole benchmark for a moment: it
// builds and starts `jetcqrs serve`, seeds it, runs one small ladder step and
// the saturation runs of the system and the baseline, and writes the
// section, the JSON and the plot. It asserts nothing about speed.
func TestMixedRunsAgainstServe(t *testing.T) {
	testenv.RequireLogicalWAL(t)
	server := envOr("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	redisURL, _ := testenv.RedisURL(t)
	chAddr, chDB := testenv.ClickHouseAddr(t)
	dir := t.TempDir()
	section, err := Mixed(t.Context(), MixedConfig{ServerURL: server, RedisURL: redisURL,
		ClickHouseURL: "clickhouse://" + chAddr + "/" + chDB, MaxConns: 4,
		Ladder: []Rate{{2, 40}}, Warmup: 500 * time.Millisecond, Duration: 2 * time.Second, Saturation: Rate{4, 80},
		SKUs: 100, Queries: 1000, ReadWorkers: 8, WriteWorkers: 4,
		JSONPath: dir + "/mixed.json", PlotPath: dir + "/docs/bench/mixed.png", Command: "jetcqrs-bench mixed", Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	checkSection(t, section)
	var res MixedResult
	b, err := os.ReadFile(dir + "/mixed.json")
	if err == nil {
		err = json.Unmarshal(b, &res)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Ladder) != 1 || len(res.Saturation) != 2 {
		t.Fatalf("%d ladder steps and %d saturation runs, want 1 and 2", len(res.Ladder), len(res.Saturation))
	}
	step := res.Ladder[0]
	for _, op := range readOps {
		if step.Ops[op].Done == 0 {
			t.Errorf("no %s succeeded: %+v", op, step.Ops[op])
		}
	}
	if step.Writes.Done == 0 || len(step.Reads.Errors)+len(step.Writes.Errors) > 0 {
		t.Errorf("reads %+v, writes %+v", step.Reads, step.Writes)
	}
	if step.Lag.Done == 0 || step.ServerCores == nil {
		t.Errorf("lag %+v, server cores %v: want both measured", step.Lag, step.ServerCores)
	}
	if bare := res.Saturation[1]; bare.Reads.Done == 0 || bare.Writes.Done == 0 || len(bare.Reads.Errors) > 0 {
		t.Errorf("baseline reads %+v, writes %+v", bare.Reads, bare.Writes)
	}
	png, err := os.ReadFile(dir + "/docs/bench/mixed.png")
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("plot: %d bytes, %v", len(png), err)
	}
	if !strings.Contains(section, "(bench/mixed.png)") {
		t.Errorf("section does not link the plot relative to docs/")
	}
}

func TestCacheCountersReadsPrometheusText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body   string
		hits, misses float64
		ok           bool
	}{
		{"present", "# HELP x\n# TYPE search_cache_hits_total counter\n" +
			"search_cache_hits_total{model=\"catalog\",note=\"a b\"} 30\n" +
			"search_cache_misses_total{model=\"catalog\"} 10\n" +
			"order_cache_hits_total 5\nhttp_requests_total{code=\"200\"} 99\n", 35, 10, true},
		{"absent", "http_requests_total{code=\"200\"} 99\ngo_goroutines 12\n", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, stop, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/metrics" {
					http.NotFound(w, r)
					return
				}
				_, _ = w.Write([]byte(tc.body))
			}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			hits, misses, ok := cacheCounters(t.Context(), http.DefaultClient, base)
			if hits != tc.hits || misses != tc.misses || ok != tc.ok {
				t.Errorf("cacheCounters = %v, %v, %v; want %v, %v, %v", hits, misses, ok, tc.hits, tc.misses, tc.ok)
			}
		})
	}
}

func TestProcessCPUReadsThisProcess(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(50 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = n * n
	}
	if cpu, ok := processCPU(os.Getpid()); !ok || cpu <= 0 {
		t.Errorf("processCPU(self) = %s, %v; want some CPU time", cpu, ok)
	}
	if _, ok := processCPU(0); ok {
		t.Error("processCPU(0) claims a reading")
	}
}
