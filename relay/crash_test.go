package relay_test

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestCrashSafety SIGKILLs the relay process at random moments while
// writers commit, restarting it each time: the stream must end up with
// every committed event exactly once (the stream's duplicate window absorbs
// what a restarted relay re-sends from the slot's confirmed position) and
// nothing that rolled back.
func TestCrashSafety(t *testing.T) {
	e := newEnv(t)
	e.install(e.config())
	w := startWriter(t, e.pool, writerOptions{goroutines: 3, aggregates: 20, pause: 2 * time.Millisecond, hold: 2 * time.Millisecond})

	const kills = 6
	for i := range kills {
		c := e.startChild("relay-crash")
		// Kill while it streams: after it took the slot, at a random moment.
		e.waitStreaming("relay-crash", 30*time.Second)
		published := e.streamCount()
		time.Sleep(time.Duration(100+rand.IntN(700)) * time.Millisecond)
		c.kill()
		t.Logf("kill %d: stream %d → %d events, writers committed %d", i+1, published, e.streamCount(), len(w.committedIDs()))
	}

	final := e.startChild("relay-crash")
	time.Sleep(500 * time.Millisecond)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), 2*time.Minute)
	time.Sleep(time.Second) // a late duplicate would show now
	if err := final.terminate(20 * time.Second); err != nil {
		t.Errorf("relay after SIGTERM: %v", err)
	}
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
	t.Logf("%d events committed, %d rolled back, stream holds %d", len(committed), len(w.rolled), len(got))
}
