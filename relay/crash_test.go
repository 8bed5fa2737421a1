package relay_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestCrashSafety SIGKILLs the relay process at random moments while
// writers commit, restarting it each time: the stream must end up with
// every committed event exactly once (a restarted relay skips what the slot
// re-sends from its confirmed position up to the stream's commit position,
// and the expected last sequence refuses any repeat) and nothing that
// rolled back.
//
// Each relay process has its own application_name, so that waiting for
// "the relay streams" waits for the new process: the walsender of the one
// just killed can still be listed on the slot for a moment, and matching
// it killed the next process before it streamed (then it proved little, and
// under load it could still be starting when the wait ended).
func TestCrashSafety(t *testing.T) {
	e := newEnv(t)
	e.install(e.config())
	w := startWriter(t, e.pool, writerOptions{goroutines: 3, aggregates: 20, pause: 2 * time.Millisecond, hold: 2 * time.Millisecond})

	const kills = 6
	for i := range kills {
		name := fmt.Sprintf("relay-crash-%d", i)
		c := e.startChild(name)
		// Kill while it streams: after it took the slot, at a random moment.
		took := e.waitStreaming(name, time.Minute)
		published := e.streamCount()
		time.Sleep(time.Duration(100+rand.IntN(700)) * time.Millisecond)
		c.kill()
		t.Logf("kill %d (streaming %s after its start): stream %d → %d events, writers committed %d", i+1,
			took.Round(time.Millisecond), published, e.streamCount(), len(w.committedIDs()))
	}

	final := e.startChild("relay-crash-final")
	e.waitStreaming("relay-crash-final", time.Minute)
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
