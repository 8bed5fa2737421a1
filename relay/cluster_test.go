package relay_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/natstest"
	"github.com/jetcqrs/jetcqrs/nats"
)

// TestStreamLeaderKilledWhilePublishing runs the relay against a three-node
// cluster with EVENTS at three replicas and kills the stream's leader twice
// while writers commit and the relay publishes: publishes fail or go
// unanswered during each election, and still the stream ends up with every
// event once, each aggregate's in version order.
func TestStreamLeaderKilledWhilePublishing(t *testing.T) {
	e := newDatabaseEnv(t)
	c := natstest.Start(t)
	e.clusterURL = c.ClientURL()
	_, js := c.Connect("test-reader")
	c.Provision(js, nats.DefaultPartitions)
	e.js = js

	e.startRelay(e.config())
	w := startWriter(t, e.pool, writerOptions{goroutines: 3, aggregates: 20, pause: 2 * time.Millisecond})
	for i := range 2 {
		w.waitCommitted(len(w.committedIDs())+500, 30*time.Second)
		leader := c.StreamLeader(nats.DefaultStreamName)
		c.Kill(leader)
		next := c.StreamLeader(nats.DefaultStreamName)
		t.Logf("kill %d: node %d led EVENTS, node %d leads now; stream holds %d events, writers committed %d",
			i+1, leader+1, next+1, e.streamCount(), len(w.committedIDs()))
		w.waitCommitted(len(w.committedIDs())+500, 30*time.Second)
		c.Restart(leader)
		c.WaitCurrent(js, nats.DefaultStreamName)
	}
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), 2*time.Minute)
	time.Sleep(time.Second)
	c.WaitCurrent(js, nats.DefaultStreamName)
	got := readClusterStream(t, js)
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
}

// readClusterStream reads EVENTS message by message, retrying each read
// while the cluster settles (a consumer could land on a node still catching
// up).
func readClusterStream(t *testing.T, js jetstream.JetStream) []nats.Event {
	t.Helper()
	var out []nats.Event
	deadline := time.Now().Add(2 * time.Minute)
	retry := func(err error) {
		if time.Now().After(deadline) {
			t.Fatalf("read EVENTS: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var stream jetstream.Stream
	for stream == nil {
		s, err := js.Stream(t.Context(), nats.DefaultStreamName)
		if err != nil {
			retry(err)
			continue
		}
		stream = s
	}
	last := stream.CachedInfo().State.LastSeq
	for seq := stream.CachedInfo().State.FirstSeq; seq <= last; {
		m, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			retry(err)
			continue
		}
		ev, err := nats.DecodeMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("stream seq %d: %v", seq, err)
		}
		out = append(out, ev)
		seq++
	}
	return out
}
