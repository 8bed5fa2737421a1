package relay_test

import (
	"testing"
	"time"
)

// TestNATSRestart shuts the nats-server down while the relay publishes and
// starts it again on the same port and store: the relay retries the
// unacknowledged events and nothing is lost or duplicated.
func TestNATSRestart(t *testing.T) {
	e := newEnv(t)
	r := e.startRelay(e.config())
	w := startWriter(t, e.pool, writerOptions{goroutines: 2, aggregates: 10, pause: 5 * time.Millisecond})
	w.waitCommitted(300, 30*time.Second)
	e.waitCount(100, 30*time.Second)

	e.stopNATS()
	down := len(w.committedIDs())
	time.Sleep(2 * time.Second)
	if len(w.committedIDs()) == down {
		t.Fatal("writers made no progress while NATS was down")
	}
	stuck := r.Status().Published
	e.startNATS(e.natsPort)

	w.waitCommitted(len(w.committedIDs())+300, 30*time.Second)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), time.Minute)
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
	if st := r.Status(); st.Published <= stuck {
		t.Errorf("published %d after the restart, %d before", st.Published, stuck)
	}
}
