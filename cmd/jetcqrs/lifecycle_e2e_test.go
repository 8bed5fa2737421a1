package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// liveGuard checks, every 50 ms while a test runs, that every consumer of
// the generation the record calls live exists: a rebuild that lost a race
// to another process used to delete them (and the generation's data).
type liveGuard struct {
	s      *system
	stopCh chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	seen   []string
	checks int
}

func guardLiveGenerations(s *system) *liveGuard {
	g := &liveGuard{s: s, stopCh: make(chan struct{})}
	g.wg.Go(g.run)
	return g
}

func (g *liveGuard) run() {
	ctx := context.Background()
	for {
		select {
		case <-g.stopCh:
			return
		case <-time.After(50 * time.Millisecond):
		}
		type live struct {
			name string
			gen  int
		}
		var lives []live
		for _, name := range projectionNames {
			st, _, err := g.s.main.record.Get(ctx, name)
			if err != nil {
				continue
			}
			lives = append(lives, live{name, st.Live})
		}
		stream, err := g.s.main.js.Stream(ctx, jnats.DefaultStreamName)
		if err != nil {
			continue
		}
		names := stream.ConsumerNames(ctx)
		have := map[string]bool{}
		for n := range names.Name() {
			have[n] = true
		}
		if names.Err() != nil {
			continue
		}
		g.mu.Lock()
		g.checks++
		for _, l := range lives {
			for part := 0; part < g.s.cfg.Partitions; part++ {
				c := projections.ConsumerName(l.name, lifecycle.GenerationName(l.gen), part)
				if !have[c] {
					// The record may have moved since it was read: only a
					// generation still live after the listing counts.
					if st, _, err := g.s.main.record.Get(ctx, l.name); err == nil && st.Live == l.gen {
						g.seen = append(g.seen, c)
					}
				}
			}
		}
		g.mu.Unlock()
	}
}

// stop ends the checks and fails the test if a live generation lost a
// consumer.
func (g *liveGuard) stop() {
	g.s.t.Helper()
	close(g.stopCh)
	g.wg.Wait()
	if g.checks == 0 {
		g.s.t.Fatal("the live generations were never checked")
	}
	if len(g.seen) > 0 {
		g.s.t.Fatalf("consumers of a live generation went missing: %v", g.seen)
	}
}

// awaitGeneration waits until the record calls gen live for each of names,
// with no rebuild under way.
func (s *system) awaitGeneration(gen int, timeout time.Duration, names ...string) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var states []lifecycle.State
		for _, name := range names {
			st, _, err := s.main.record.Get(context.Background(), name)
			if err != nil {
				s.t.Fatal(err)
			}
			states = append(states, st)
		}
		if !slices.ContainsFunc(states, func(st lifecycle.State) bool { return st.Live != gen || st.Phase != lifecycle.PhaseIdle }) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%v not at generation %d with no rebuild within %s: %+v", names, gen, timeout, states)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkRecord fails the test unless name's record is live at gen, with gen
// the last number handed out (no rebuild was started and dropped).
func (s *system) checkRecord(name string, gen int) {
	s.t.Helper()
	st, _, err := s.main.record.Get(context.Background(), name)
	if err != nil {
		s.t.Fatal(err)
	}
	if st.Live != gen || max(st.Reserved, 1) != gen || st.Phase != lifecycle.PhaseIdle {
		s.t.Errorf("record of %s = %+v; want generation %d live, the last reserved, no rebuild", name, st, gen)
	}
}

// rebuildsStarted sums, over processes, the rebuilds each started of name.
func rebuildsStarted(t *testing.T, name string, procs ...*system) float64 {
	var n float64
	for _, p := range procs {
		n += counter(t, p.main, "jetcqrs_rebuilds_started_total", name)
	}
	return n
}

// TestRedisLosingItsDataUnderSeveralProjectors runs two, then three
// projector processes on a Redis of their own while commands flow; Redis is
// flushed, and later killed and restarted without persistence: every
// process sees the lost data, exactly one rebuild runs per model and loss,
// the generation the record calls live keeps its consumers throughout, and
// every read model converges to the write side.
func TestRedisLosingItsDataUnderSeveralProjectors(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d projectors", n), func(t *testing.T) {
			rs := startRedisServer(t, true)
			cfg := testConfig(t)
			cfg.RedisURL = rs.url()
			s := startSystem(t, cfg, All)
			procs := []*system{s}
			for range n - 1 {
				procs = append(procs, startPeer(t, s, Components{Projector: true}))
			}
			admin := s.token("ops", domain.RoleAdmin)
			skus := s.seedCatalog(admin, fmt.Sprintf("LP%d", n), 6, 100_000)
			w := s.startWorkload(admin, skus, 2, 0)
			w.waitFor(100)
			guard := guardLiveGenerations(s)

			ropts, err := redis.ParseURL(rs.url())
			if err != nil {
				t.Fatal(err)
			}
			client := redis.NewClient(ropts)
			defer client.Close()
			if err := client.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			w.waitFor(w.count.Load() + 50)
			s.awaitGeneration(2, 2*time.Minute, "orders", "inventory")

			rs.kill()
			w.waitFor(w.count.Load() + 30)
			rs.start()
			w.waitFor(w.count.Load() + 50)
			s.awaitGeneration(3, 2*time.Minute, "orders", "inventory")
			w.waitFor(w.count.Load() + 50)
			w.stop()
			s.awaitLive(admin, time.Minute)
			guard.stop()
			s.checkReadModelsMatchWriteSide(s.main, true)
			for _, name := range []string{"orders", "inventory"} {
				s.checkRecord(name, 3)
				if got := rebuildsStarted(t, name, procs...); got != 2 {
					t.Errorf("%s: %v rebuilds started over %d processes, want 2 (one per loss)", name, got, n)
				}
			}
			for _, name := range []string{"catalog", "sales"} {
				s.checkRecord(name, 1)
			}
		})
	}
}

// TestConcurrentRebuildRequestsRunOneRebuildOnEveryProcess sends the same
// rebuild to two projector processes at once while commands flow: one
// answers 202, the other 409; the generation is built by both processes
// (each applies some of its partitions), promoted once, and converges.
func TestConcurrentRebuildRequestsRunOneRebuildOnEveryProcess(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	peer := startPeer(t, s, Components{Projector: true})
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "CR", 6, 100_000)
	w := s.startWorkload(admin, skus, 3, 400)
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)
	guard := guardLiveGenerations(s)
	w = s.startWorkload(admin, skus, 2, 0)

	for _, name := range []string{"orders", "inventory", "sales"} {
		codes := make([]int, 2)
		var wg sync.WaitGroup
		for i, p := range []*system{s, peer} {
			wg.Go(func() {
				resp, raw, err := p.send(http.MethodPost, "/v1/admin/projections/"+name+"/rebuild", admin, nil, nil, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusConflict {
					t.Errorf("rebuild %s: %d %s", name, resp.StatusCode, raw)
				}
				codes[i] = resp.StatusCode
			})
		}
		wg.Wait()
		slices.Sort(codes)
		if !slices.Equal(codes, []int{http.StatusAccepted, http.StatusConflict}) {
			t.Fatalf("two rebuilds of %s at once answered %v, want one 202 and one 409", name, codes)
		}
	}
	s.awaitGeneration(2, 2*time.Minute, "orders", "inventory", "sales")
	w.stop()
	s.awaitLive(admin, time.Minute)
	guard.stop()
	s.checkReadModelsMatchWriteSide(s.main, true)
	for _, name := range []string{"orders", "inventory", "sales"} {
		s.checkRecord(name, 2)
		if got := rebuildsStarted(t, name, s, peer); got != 1 {
			t.Errorf("%s: %v rebuilds started, want 1", name, got)
		}
	}
	// Both processes applied partitions of the rebuilds.
	var applied [2]float64
	for i, p := range []*system{s, peer} {
		for _, name := range []string{"orders", "inventory", "sales"} {
			applied[i] += counter(t, p.main, "jetcqrs_rebuild_events_applied_total", name)
		}
	}
	if applied[0] == 0 || applied[1] == 0 {
		t.Errorf("events applied to the rebuilt generations per process: %v; want both processes to have applied some", applied)
	}
	t.Logf("events applied to the rebuilt generations per process: %v", applied)
}

// TestPromotionRacingAProcessStartIsFollowed opens a process (its read
// models at the live generation), then promotes a rebuilt generation
// elsewhere before the process runs: once running, it serves the promoted
// generation, not the one it opened (which is deleted after the grace).
func TestPromotionRacingAProcessStartIsFollowed(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "PR", 4, 10_000)
	w := s.startWorkload(admin, skus, 2, 50)
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)

	secret, err := s.cfg.Secret()
	if err != nil {
		t.Fatal(err)
	}
	cfg := *s.cfg
	cfg.DataDir, cfg.HTTPAddr, cfg.JWTSecret = t.TempDir(), "127.0.0.1:0", string(secret)
	cfg.NATSURL = s.main.natsServer.ClientURL()
	late, err := NewMain(context.Background(), &cfg, Components{Projector: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if got, _ := late.live.Generation("orders"); got != 1 {
		t.Fatalf("the late process opened orders at generation %d, want 1", got)
	}

	s.expect(http.StatusAccepted, http.MethodPost, "/v1/admin/projections/orders/rebuild", admin, nil, nil, nil)
	s.awaitGeneration(2, 2*time.Minute, "orders")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- late.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the late process stopped with %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for gen, _ := late.live.Generation("orders"); gen != 2; gen, _ = late.live.Generation("orders") {
		if time.Now().After(deadline) {
			t.Fatal("the late process still serves generation 1 of orders 10s after it started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, err := late.models.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st {
		if p.Name == "orders" && p.Generation != "g2" {
			t.Errorf("the late process applies orders %s, want g2", p.Generation)
		}
	}
}

// TestMain runs the binary itself when a test starts it as a child process
// (JETCQRS_TEST_CHILD=1): a real process, which a test can kill.
func TestMain(m *testing.M) {
	if os.Getenv("JETCQRS_TEST_CHILD") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a jetcqrs process of first's deployment, run as a child process.
type child struct {
	cmd  *exec.Cmd
	base string
	out  bytes.Buffer
}

// startChild runs `jetcqrs projector` against first's NATS server, Redis,
// ClickHouse and database, and waits until it is ready.
func startChild(t *testing.T, first *system) *child {
	t.Helper()
	secret, err := first.cfg.Secret()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c := &child{base: "http://" + addr}
	c.cmd = exec.Command(os.Args[0], "projector", "--http-addr", addr, "--data-dir", t.TempDir(),
		"--nats-url", first.natsURL(), "--jwt-secret", string(secret),
		"--database-url", first.cfg.DatabaseURL, "--redis-url", first.cfg.RedisURL, "--redis-prefix", first.cfg.RedisPrefix,
		"--clickhouse-url", first.cfg.ClickHouseURL, "--partitions", strconv.Itoa(first.cfg.Partitions))
	c.cmd.Env = append(os.Environ(), "JETCQRS_TEST_CHILD=1")
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
		if t.Failed() {
			t.Logf("child process output:\n%s", c.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child process is not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProjectorKilledMidRebuildIsTakenOver starts a rebuild in a projector
// child process and kills it (SIGKILL) as soon as the new generation is
// being built, while commands flow: another process takes the rebuild over
// once the lease expires, carries on the same generation and promotes it;
// the live generation keeps its consumers and everything converges.
func TestProjectorKilledMidRebuildIsTakenOver(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	startPeer(t, s, Components{Projector: true})
	victim := startChild(t, s)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "KR", 6, 100_000)
	w := s.startWorkload(admin, skus, 3, 400)
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)
	guard := guardLiveGenerations(s)
	w = s.startWorkload(admin, skus, 2, 0)

	resp, raw, err := (&system{t: t, base: victim.base}).send(http.MethodPost, "/v1/admin/projections/orders/rebuild", admin, nil, nil, nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("rebuild in the child: %v %v %s", resp, err, raw)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _, err := s.main.record.Get(context.Background(), "orders")
		if err != nil {
			t.Fatal(err)
		}
		if st.Live != 1 {
			t.Fatalf("orders promoted before the kill: %+v", st)
		}
		if st.Phase == lifecycle.PhaseBuilding {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child's rebuild is not building after 30s: %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.cmd.Wait()

	// Until the lease expires, the surviving processes apply the generation
	// the child was building, and show its progress.
	deadline = time.Now().Add(10 * time.Second)
	for {
		var st []projectionStatus
		s.do(http.MethodGet, "/v1/admin/projections", admin, nil, nil, &st)
		i := slices.IndexFunc(st, func(p projectionStatus) bool { return p.Name == "orders" })
		if i >= 0 && st[i].Rebuild != nil && st[i].Rebuild.Generation == "g2" && st[i].Rebuild.Total > 0 &&
			st[i].Rebuild.Done > 0 && st[i].Rebuild.Done <= st[i].Rebuild.Total && st[i].Rebuild.Owner != "" {
			t.Logf("rebuild progress of orders: %+v", *st[i].Rebuild)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rebuild progress of orders in GET /v1/admin/projections: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	s.awaitGeneration(2, 2*time.Minute, "orders")
	w.stop()
	s.awaitLive(admin, time.Minute)
	guard.stop()
	s.checkReadModelsMatchWriteSide(s.main, true)
	s.checkRecord("orders", 2)
}

// TestCatalogIndexOfAnotherSchemaIsRebuilt starts a read node on an
// embedded catalog index that an older build wrote (another schema): the
// node does not refuse to start, it replaces the index and rebuilds the
// catalog from the stream, and then serves every product again.
func TestCatalogIndexOfAnotherSchemaIsRebuilt(t *testing.T) {
	writer := startSystem(t, testConfig(t), Components{CommandAPI: true, Relay: true})
	admin := writer.token("ops", domain.RoleAdmin)
	reader := startPeer(t, writer, Components{QueryAPI: true, Projector: true})
	skus := writer.seedCatalog(admin, "SCH", 4, 10)
	writer.awaitCaughtUp(reader, 30*time.Second)
	reader.stop()

	dir := filepath.Join(reader.cfg.DataDir, "catalog", "g1")
	idx, err := bleve.OpenUsing(dir, map[string]any{"bolt_timeout": "10s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.SetInternal([]byte("jetcqrs.catalog.schema"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := idx.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := *reader.cfg
	cfg.HTTPAddr = "127.0.0.1:0"
	again := startSystem(t, &cfg, Components{QueryAPI: true, Projector: true})
	for _, sku := range skus {
		for deadline := time.Now().Add(time.Minute); ; {
			var p projections.ProductView
			resp, _, err := again.send(http.MethodGet, "/v1/products/"+sku, "", nil, nil, &p)
			if err == nil && resp.StatusCode == http.StatusOK && p.SKU == sku && p.Available == 10 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /v1/products/%s after the schema change: %v %v %+v; want it rebuilt with 10 available", sku, resp, err, p)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var res projections.SearchResult
	again.expect(http.StatusOK, http.MethodGet, "/v1/products?q=seeded&in_stock=true", "", nil, nil, &res)
	if res.Total != int64(len(skus)) {
		t.Errorf("in-stock search after the rebuild: total %d, want %d", res.Total, len(skus))
	}
}
