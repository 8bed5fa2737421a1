package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pruneChunk bounds the rows one DELETE removes, so a large prune holds no
// long lock and writes WAL in modest steps.
const pruneChunk = 10_000

// PruneOutbox deletes the outbox rows that occurred more than olderThan ago
// and that the stream holds: rows the relay marked with the stream sequence
// it stored them at (the ledger, see Publisher). A row the stream does not
// hold, or that only an older relay marked published, is kept however old.
// The stream keeps every event (the nats adapter refuses an EVENTS stream
// with limits), so a pruned event stays available to rebuilds. It returns
// how many rows it deleted.
func PruneOutbox(ctx context.Context, databaseURL string, olderThan time.Duration) (int64, error) {
	if olderThan < 0 {
		return 0, errors.New("relay: prune: olderThan is negative")
	}
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return 0, fmt.Errorf("relay: prune: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var total int64
	for {
		tag, err := conn.Exec(ctx, `DELETE FROM `+outboxTable+` WHERE seq IN (
				SELECT seq FROM `+outboxTable+`
				WHERE stream_seq IS NOT NULL AND occurred_at < now() - $1::interval
				LIMIT $2)`, olderThan, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("relay: prune: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneChunk {
			return total, nil
		}
	}
}
