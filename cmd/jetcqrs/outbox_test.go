package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/postgres"
)

// TestOutboxPruneDeletesOnlyWhatTheStreamHolds runs `outbox prune` on an
// outbox of old events, half of them recorded as stored in the stream.
func TestOutboxPruneDeletesOnlyWhatTheStreamHolds(t *testing.T) {
	dbURL := testenv.PostgresURL(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, dbURL, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO outbox_events
		(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, occurred_at, published_at, stream_seq)
		SELECT gen_random_uuid(), 'order', 'o-' || v, 1, 'OrderPlaced', 1, '{}', now() - interval '40 days',
			CASE WHEN v % 2 = 0 THEN now() END, CASE WHEN v % 2 = 0 THEN v END
		FROM generate_series(1, 10) AS v`); err != nil {
		t.Fatal(err)
	}

	if _, err := run(t, map[string]string{"DATABASE_URL": dbURL}, "outbox", "prune", "--older-than", "soon"); err == nil ||
		!strings.Contains(err.Error(), "--older-than") {
		t.Fatalf("prune --older-than soon: %v, want an error naming the flag", err)
	}
	out, err := run(t, map[string]string{"DATABASE_URL": dbURL}, "outbox", "prune", "--older-than", "30d")
	if err != nil || strings.TrimSpace(out) != "5 outbox events deleted" {
		t.Fatalf("prune --older-than 30d = %q, %v; want 5 deleted", out, err)
	}
	var left, unheld int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE stream_seq IS NULL) FROM outbox_events`).
		Scan(&left, &unheld); err != nil {
		t.Fatal(err)
	}
	if left != 5 || unheld != 5 {
		t.Fatalf("%d rows left, %d of them not in the stream; want the 5 the stream does not hold", left, unheld)
	}
}
