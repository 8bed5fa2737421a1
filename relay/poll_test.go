package relay_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetcqrs/jetcqrs/relay"
)

func (e *env) pollConfig() relay.Config {
	cfg := e.config()
	cfg.Mode = relay.ModePoll
	cfg.PollInterval = 100 * time.Millisecond
	return cfg
}

// unpublished counts committed outbox rows without published_at.
func (e *env) unpublished() int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.t.Context(), `SELECT count(*) FROM outbox_events WHERE published_at IS NULL`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestPollInterleavedCommits commits transactions out of the order their
// rows were inserted (seq order) and checks that the polling relay neither
// skips the earlier row nor lets the later one overtake it.
func TestPollInterleavedCommits(t *testing.T) {
	e := newEnv(t)
	e.startRelay(e.pollConfig())
	ctx := t.Context()
	begin := func() pgx.Tx {
		t.Helper()
		conn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	insert := func(tx pgx.Tx, agg string) string {
		t.Helper()
		var id string
		if err := tx.QueryRow(ctx, insertOutbox, agg, 1, 1).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	commit := func(tx pgx.Tx) {
		t.Helper()
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// settle gives the relay several polls and the notifications.
	settle := func() { time.Sleep(700 * time.Millisecond) }
	var want []string

	t.Run("later insert commits first", func(t *testing.T) {
		a, b := begin(), begin()
		idA := insert(a, "a1") // smaller seq, older transaction
		idB := insert(b, "b1")
		commit(b)
		settle()
		if n := e.streamCount(); n != 0 {
			t.Fatalf("stream holds %d events while the older transaction is open, want 0 (B must wait behind A)", n)
		}
		commit(a)
		want = append(want, idA, idB)
		e.waitCount(2, 10*time.Second)
		if got := streamIDs(e.streamEvents()); !slices.Equal(got, want) {
			t.Fatalf("stream %v, want %v", got, want)
		}
	})

	t.Run("older transaction inserts later", func(t *testing.T) {
		a, b := begin(), begin()
		if _, err := b.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil { // B is older than A
			t.Fatal(err)
		}
		idA := insert(a, "a2")
		idB := insert(b, "b2")
		commit(a) // A's row is visible but above the horizon B holds
		settle()
		if n := e.streamCount(); n != 2 {
			t.Fatalf("stream holds %d events while B is open, want 2", n)
		}
		commit(b)
		want = append(want, idA, idB)
		e.waitCount(4, 10*time.Second)
		if got := streamIDs(e.streamEvents()); !slices.Equal(got, want) {
			t.Fatalf("stream %v, want %v", got, want)
		}
	})

	t.Run("rolled back in between", func(t *testing.T) {
		a, b, c := begin(), begin(), begin()
		idA := insert(a, "a3")
		insert(b, "b3")
		idC := insert(c, "c3")
		commit(c)
		if err := b.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		settle()
		commit(a)
		want = append(want, idA, idC)
		e.waitCount(6, 10*time.Second)
		settle()
		if got := streamIDs(e.streamEvents()); !slices.Equal(got, want) {
			t.Fatalf("stream %v, want %v", got, want)
		}
	})
	eventually(t, 5*time.Second, "published_at set on every row", func() bool { return e.unpublished() == 0 })
}

// TestPollConcurrentWriters runs writers whose transactions hold their
// locks for random times, so commits interleave in every order: every
// committed event is published once, per-aggregate order holds and every
// row is marked.
func TestPollConcurrentWriters(t *testing.T) {
	e := newEnv(t)
	r := e.startRelay(e.pollConfig())
	w := startWriter(t, e.pool, writerOptions{goroutines: 6, aggregates: 8, hold: 20 * time.Millisecond})
	time.Sleep(3 * time.Second)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), time.Minute)
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
	eventually(t, 5*time.Second, "published_at set on every row", func() bool { return e.unpublished() == 0 })
	if st := r.Status(); st.Mode != relay.ModePoll || st.Published != uint64(len(committed)) || !st.Leader {
		t.Errorf("Status %+v, want %d published", st, len(committed))
	}
	t.Logf("%d events committed, %d rolled back", len(committed), len(w.rolled))
}
