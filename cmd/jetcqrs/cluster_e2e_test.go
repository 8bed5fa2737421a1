package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/natstest"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// startOnCluster runs comp against a three-node NATS cluster, given to the
// binary as NATS_URL with every node, and no NATS_REPLICAS: the process
// picks three replicas itself.
func startOnCluster(t *testing.T, comp Components) (*natstest.Cluster, *system) {
	t.Helper()
	c := natstest.Start(t)
	cfg := testConfig(t)
	cfg.NATSURL = c.ClientURL()
	return c, startSystem(t, cfg, comp)
}

// checkReplicated fails the test unless each stream is at the cluster's
// size.
func (s *system) checkReplicated(streams ...string) {
	s.t.Helper()
	for _, name := range streams {
		st, err := s.main.js.Stream(context.Background(), name)
		if err != nil {
			s.t.Fatalf("stream %s: %v", name, err)
		}
		if got := st.CachedInfo().Config.Replicas; got != natstest.Size {
			s.t.Fatalf("stream %s at %d replicas on a %d-node cluster, want %d", name, got, natstest.Size, natstest.Size)
		}
	}
}

// TestStreamLeaderAndAProjectorKilledTogether runs the command API and the
// relay in one process, a projector in another and a projector child
// process, all on a three-node cluster, under a steady workload. Once the
// child has applied events, EVENTS's leader node and the child are killed
// at the same moment: the relay's publishes and the projectors' fetches and
// acks fail over to the new leader while the child's partitions move to the
// surviving projector. Afterwards the stream holds every committed event
// once, each aggregate's in version order, and every order, user list,
// inventory and sales entry the survivor serves equals PostgreSQL: an event
// lost would leave an entry behind, one applied out of order would leave an
// older version, and sales would count a line applied twice.
func TestStreamLeaderAndAProjectorKilledTogether(t *testing.T) {
	c, writer := startOnCluster(t, Components{CommandAPI: true, Relay: true})
	writer.checkReplicated(jnats.DefaultStreamName, jnats.DefaultDeadLetterStreamName)
	survivor := startPeer(t, writer, Components{Projector: true})
	survivor.checkReplicated("KV_" + lifecycle.Bucket)
	victim := startChild(t, writer)
	admin := writer.token("ops", domain.RoleAdmin)
	skus := writer.seedCatalog(admin, "CLU", 6, 100_000)
	w := writer.startWorkload(admin, skus, 4, 0)

	deadline := time.Now().Add(time.Minute)
	for victim.applied(t) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the child projector applied nothing within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.waitFor(w.count.Load() + 100)
	leader := c.StreamLeader(jnats.DefaultStreamName)
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		_ = victim.cmd.Process.Signal(syscall.SIGKILL)
		_ = victim.cmd.Wait()
	}()
	c.Kill(leader)
	<-killed
	next := c.StreamLeader(jnats.DefaultStreamName)
	before := w.count.Load()
	w.waitFor(before + 200)
	t.Logf("node %d led EVENTS and was killed with the child projector; node %d leads now; %d commands before, %d after",
		leader+1, next+1, before, w.count.Load()-before)
	c.Restart(leader)
	c.WaitCurrent(survivor.main.js, jnats.DefaultStreamName)
	commands := w.stop()

	writer.awaitCaughtUp(survivor, 2*time.Minute)
	writer.checkStreamHoldsTheOutboxOnceInOrder()
	writer.checkReadModelsMatchWriteSide(survivor.main, false)
	t.Logf("%d commands; order and inventory events applied by the survivor: %v",
		commands, counter(t, survivor.main, "jetcqrs_projection_events_applied_total", "orders")+
			counter(t, survivor.main, "jetcqrs_projection_events_applied_total", "inventory"))
}

// applied sums the child's jetcqrs_projection_events_applied_total from its
// /metrics.
func (c *child) applied(t *testing.T) float64 {
	t.Helper()
	resp, err := http.Get(c.base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "jetcqrs_projection_events_applied_total{") {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// checkStreamHoldsTheOutboxOnceInOrder reads the whole stream and fails the
// test unless it holds every outbox event exactly once, each aggregate's in
// version order.
func (s *system) checkStreamHoldsTheOutboxOnceInOrder() {
	s.t.Helper()
	ctx := context.Background()
	rows, err := s.pool.Query(ctx, `SELECT id::text FROM outbox_events`)
	if err != nil {
		s.t.Fatal(err)
	}
	outbox := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			s.t.Fatal(err)
		}
		outbox[id] = false
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	last := map[string]int64{}
	for _, m := range s.streamEvents(ctx) {
		ev, err := jnats.DecodeMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			s.t.Fatalf("stream seq %d: %v", m.Sequence, err)
		}
		seen, ok := outbox[ev.ID]
		switch {
		case !ok:
			s.t.Fatalf("stream seq %d: event %s is not in the outbox", m.Sequence, ev.ID)
		case seen:
			s.t.Fatalf("stream seq %d: event %s is in the stream twice", m.Sequence, ev.ID)
		}
		outbox[ev.ID] = true
		key := ev.AggregateType + ":" + ev.AggregateID
		if ev.AggregateVersion <= last[key] {
			s.t.Fatalf("stream seq %d: %s version %d after %d", m.Sequence, key, ev.AggregateVersion, last[key])
		}
		last[key] = ev.AggregateVersion
	}
	for id, seen := range outbox {
		if !seen {
			s.t.Fatalf("outbox event %s is not in the stream", id)
		}
	}
}

// TestBucketLeaderKilledDuringPromotion rebuilds the orders model on a
// three-node cluster, with two projector processes and commands flowing up
// to the kill of the node leading the generations bucket (KV_jetcqrs_read_models)
// the moment the rebuild fences the live generation, that is between the
// decision to promote and the compare-and-set that records it. Whatever the
// outcome of the writes caught in the election, exactly one generation ends
// up live: the record names one with no rebuild under way, its consumers
// exist on every partition, every other generation's consumers and Redis
// keys are gone, the live generation never lost a consumer meanwhile, and
// the read models equal PostgreSQL.
func TestBucketLeaderKilledDuringPromotion(t *testing.T) {
	c, s := startOnCluster(t, All)
	s.checkReplicated(jnats.DefaultStreamName, jnats.DefaultDeadLetterStreamName, "KV_"+lifecycle.Bucket)
	startPeer(t, s, Components{Projector: true})
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "KVL", 6, 100_000)
	w := s.startWorkload(admin, skus, 2, 50)
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)
	guard := guardLiveGenerations(s)
	w = s.startWorkload(admin, skus, 1, 0)

	// The fence lasts at least one of the owner's 250 ms ticks; on a busy
	// machine a poll can still miss it, and then the next rebuild is tried.
	leader := -1
	for attempt := 1; leader < 0; attempt++ {
		if attempt > 3 {
			t.Fatal("three rebuilds were promoted without their fence being seen")
		}
		var accepted struct {
			Generation string `json:"generation"`
		}
		s.expect(http.StatusAccepted, http.MethodPost, "/v1/admin/projections/orders/rebuild", admin, nil, nil, &accepted)
		st, _, err := s.main.record.Get(context.Background(), "orders")
		if err != nil {
			t.Fatal(err)
		}
		fenced := projections.ConsumerName("orders", lifecycle.GenerationName(st.Live), s.cfg.Partitions-1)
		deadline := time.Now().Add(3 * time.Minute)
		for {
			cons, err := s.main.js.Consumer(context.Background(), jnats.DefaultStreamName, fenced)
			if err == nil && cons.CachedInfo().Paused {
				leader = c.StreamLeader("KV_" + lifecycle.Bucket)
				c.Kill(leader)
				// Commands stop here: on a busy machine steady traffic can
				// keep a fence from settling for a long while, and the
				// promotion is what this test is about.
				w.stop()
				t.Logf("rebuild %d: node %d led the bucket and was killed with %s fenced; node %d leads now",
					attempt, leader+1, fenced, c.StreamLeader("KV_"+lifecycle.Bucket)+1)
				break
			}
			if now, _, err := s.main.record.Get(context.Background(), "orders"); err == nil && now.Live != st.Live {
				t.Logf("rebuild %d (%s) promoted before its fence was seen; rebuilding again", attempt, accepted.Generation)
				s.awaitOneGeneration("orders", time.Minute)
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the rebuild did not fence the live generation within 3 minutes")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	live := s.awaitOneGeneration("orders", 3*time.Minute)
	c.Restart(leader)
	c.WaitCurrent(s.main.js, "KV_"+lifecycle.Bucket)
	s.awaitLive(admin, time.Minute)
	guard.stop()
	s.checkRecord("orders", live)
	t.Logf("generation %d of orders is live", live)

	stream, err := s.main.js.Stream(context.Background(), jnats.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	names := stream.ConsumerNames(context.Background())
	for n := range names.Name() {
		have[n] = true
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	for gen := 1; gen <= live; gen++ {
		g := lifecycle.GenerationName(gen)
		for part := range s.cfg.Partitions {
			if cn := projections.ConsumerName("orders", g, part); have[cn] != (gen == live) {
				t.Errorf("consumer %s exists: %v; only generation %d's should", cn, have[cn], live)
			}
		}
		if gen == live {
			continue
		}
		for _, prefix := range []string{g + ":order:", g + ":user:", g + ":meta:orders:"} {
			if keys := redisKeys(t, s.cfg.RedisURL, s.cfg.RedisPrefix+prefix); len(keys) > 0 {
				t.Errorf("%d Redis keys under %s remain, e.g. %s", len(keys), prefix, keys[0])
			}
		}
	}
	s.checkReadModelsMatchWriteSide(s.main, true)
}

// awaitOneGeneration waits until the record of name shows no rebuild under
// way, reading
// through the bucket's leader election, and returns the live generation.
func (s *system) awaitOneGeneration(name string, timeout time.Duration) int {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var last lifecycle.State
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, _, lastErr = s.main.record.Get(ctx, name)
		cancel()
		if lastErr == nil && last.Phase == lifecycle.PhaseIdle {
			return last.Live
		}
		time.Sleep(50 * time.Millisecond)
	}
	var status []projectionStatus
	_, raw := s.do(http.MethodGet, "/v1/admin/projections", s.token("ops", domain.RoleAdmin), nil, nil, &status)
	// What the rebuild's owner decides from, per partition.
	var consumers []string
	for _, gen := range []int{last.Live, last.Rebuild} {
		for part := range s.cfg.Partitions {
			cn := projections.ConsumerName(name, lifecycle.GenerationName(gen), part)
			c, err := s.main.js.Consumer(context.Background(), jnats.DefaultStreamName, cn)
			if err != nil {
				consumers = append(consumers, fmt.Sprintf("%s: %v", cn, err))
				continue
			}
			i := c.CachedInfo()
			consumers = append(consumers, fmt.Sprintf("%s: delivered %d ack floor %d ack pending %d pending %d paused %v leader %v",
				cn, i.Delivered.Stream, i.AckFloor.Stream, i.NumAckPending, i.NumPending, i.Paused, i.Cluster))
		}
	}
	s.t.Fatalf("%s still rebuilding after %s: %+v (err %v); projections: %s; consumers:\n%s", name, timeout, last, lastErr, raw,
		strings.Join(consumers, "\n"))
	return 0
}
