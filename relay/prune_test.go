package relay_test

import (
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/relay"
)

// TestPruneKeepsWhatTheStreamDoesNotHold prunes an outbox whose older rows
// are partly published: only rows the stream holds (marked by the relay)
// and old enough go; the unpublished ones stay, however old.
func TestPruneKeepsWhatTheStreamDoesNotHold(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	published := commitTransactions(t, e, 40, 5)
	_, stop := e.runRelay(e.config())
	e.waitCount(uint64(len(published)), time.Minute)
	if err := stop(); err != nil {
		t.Fatalf("relay Run: %v", err)
	}
	unpublished := commitTransactions(t, e, 40, 5)
	if _, err := e.pool.Exec(ctx, `UPDATE outbox_events SET occurred_at = occurred_at - interval '30 days'`); err != nil {
		t.Fatal(err)
	}

	if n, err := relay.PruneOutbox(ctx, e.dbURL, 60*24*time.Hour); err != nil || n != 0 {
		t.Fatalf("prune older than 60 days = %d, %v; want 0 rows", n, err)
	}
	n, err := relay.PruneOutbox(ctx, e.dbURL, 7*24*time.Hour)
	if err != nil || n != int64(len(published)) {
		t.Fatalf("prune older than 7 days = %d, %v; want the %d published rows", n, err, len(published))
	}
	var left int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM outbox_events WHERE id = ANY($1::uuid[])`, unpublished).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != len(unpublished) {
		t.Fatalf("%d of %d unpublished rows left after the prune", left, len(unpublished))
	}

	// The relay started again publishes what the prune kept, and only that.
	e.startRelay(e.config())
	e.waitCount(uint64(len(published)+len(unpublished)), time.Minute)
	time.Sleep(300 * time.Millisecond)
	checkExactlyOnce(t, e.streamEvents(), append(published, unpublished...))
}
