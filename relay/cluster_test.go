package relay_test

import (
	"testing"
	"time"

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
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
}
