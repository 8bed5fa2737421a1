package relay_test

import (
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/relay"
)

// TestFailover runs two relay processes: one streams, the other stands by;
// SIGKILL the active one and the standby must stream within a few seconds,
// with nothing lost.
func TestFailover(t *testing.T) {
	e := newEnv(t)
	e.install(e.config())
	w := startWriter(t, e.pool, writerOptions{goroutines: 2, aggregates: 10, pause: 5 * time.Millisecond})

	a := e.startChild("relay-a")
	e.waitStreaming("relay-a", 30*time.Second)
	e.startChild("relay-b")
	eventually(t, 30*time.Second, "relay-b standing by", func() bool {
		var n int
		err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'relay-b'`).Scan(&n)
		return err == nil && n > 0
	})
	time.Sleep(time.Second)
	if app := e.streamingApp(); app != "relay-a" {
		t.Fatalf("slot streamed by %q while relay-a is alive, want relay-a", app)
	}

	before := len(w.committedIDs())
	a.kill()
	took := e.waitStreaming("relay-b", 30*time.Second)
	t.Logf("relay-b streams %s after relay-a was killed", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("takeover took %s, want at most 5s", took)
	}
	w.waitCommitted(before+300, 30*time.Second)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), time.Minute)
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
}

// TestLeadershipLoss ends the leader's lock session under it, as a
// network partition or an administrator would: the leader must stop
// streaming at once and the standby take over, with nothing lost.
func TestLeadershipLoss(t *testing.T) {
	e := newEnv(t)
	cfg := func(app string) relay.Config {
		c := e.config()
		c.DatabaseURL += "&application_name=" + app
		c.Logger = c.Logger.With("relay", app)
		return c
	}
	r1 := e.startRelay(cfg("relay-1"))
	w := startWriter(t, e.pool, writerOptions{goroutines: 2, aggregates: 10, pause: 5 * time.Millisecond})
	e.waitStreaming("relay-1", 30*time.Second)
	r2 := e.startRelay(cfg("relay-2"))
	eventually(t, 10*time.Second, "relay-1 leads, relay-2 stands by", func() bool {
		return r1.Status().Leader && !r2.Status().Leader
	})
	w.waitCommitted(200, 30*time.Second)

	// Only the lock session: relay-1's walsender stays up until relay-1
	// itself lets go of it.
	tag, err := e.pool.Exec(t.Context(), `SELECT pg_terminate_backend(l.pid) FROM pg_locks l
		JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'relay-1' AND a.backend_type = 'client backend'`)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminate relay-1's lock session: %v (%d rows)", err, tag.RowsAffected())
	}
	took := e.waitStreaming("relay-2", 15*time.Second)
	t.Logf("relay-2 streams %s after relay-1 lost its lock session", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("takeover took %s, want at most 5s", took)
	}
	eventually(t, 5*time.Second, "relay-1 standing by", func() bool { return !r1.Status().Leader && r2.Status().Leader })

	before := len(w.committedIDs())
	w.waitCommitted(before+200, 30*time.Second)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), time.Minute)
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
}
