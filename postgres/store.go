package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetcqrs/jetcqrs/domain"
)

// Hooks let tests inject faults at the points where a crash or an error is the
// most dangerous. Production code leaves them nil.
type Hooks struct {
	// AfterWrite runs inside the transaction after state and outbox rows are
	// written and before commit; an error rolls everything back.
	// Setting it makes the commit a round trip of its own.
	AfterWrite func(ctx context.Context, tx Querier, command string) error
}

// Store runs commands against the write store.
type Store struct {
	pool  *pgxpool.Pool
	now   func() time.Time
	hooks Hooks
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithHooks sets fault-injection hooks (tests).
func WithHooks(h Hooks) Option { return func(s *Store) { s.hooks = h } }

// NewStore returns a Store over pool.
func NewStore(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// ErrIdempotencyKeyReused is returned (as a domain error) when a key is reused
// with another request.
var errKeyReused = &domain.Error{Code: domain.CodeIdempotencyKeyReused,
	Message: "this Idempotency-Key was used with a different request"}

// run executes fn in one transaction with the idempotency protocol around it:
// the key row is inserted first (a concurrent retry with the same key waits on
// it), fn's result is stored in it, and both commit or roll back together. A
// failed command leaves no key behind, so the client may retry it.
func (s *Store) run(ctx context.Context, command string, meta domain.CommandMeta, fn func(tx Querier, w *writer) (domain.CommandResult, error)) (domain.CommandResult, error) {
	for attempt := 0; ; attempt++ {
		res, err := s.runOnce(ctx, command, meta, fn)
		if err != nil && attempt < 2 && retryable(err) {
			continue
		}
		return res, err
	}
}

// runOnce runs fn in one transaction of two round trips: BEGIN goes with the
// first read (the idempotency claim or fn's), and the writes, the stored
// result and COMMIT go together.
func (s *Store) runOnce(ctx context.Context, command string, meta domain.CommandMeta, fn func(tx Querier, w *writer) (domain.CommandResult, error)) (res domain.CommandResult, err error) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return domain.CommandResult{}, fmt.Errorf("%s: connection: %w", command, err)
	}
	defer pc.Release()
	tx := &txn{conn: pc.Conn()}
	committed := false
	defer func() {
		if !committed {
			tx.rollback(ctx)
		}
	}()
	if meta.IdempotencyKey != "" {
		stored, found, err := claimKey(ctx, tx, meta)
		if err != nil {
			return domain.CommandResult{}, fmt.Errorf("%s: %w", command, err)
		}
		if found {
			stored.Replayed = true
			return stored, nil
		}
	}
	w := &writer{now: s.now().UTC().Truncate(time.Microsecond), meta: meta}
	res, err = fn(tx, w)
	if err != nil {
		return domain.CommandResult{}, err
	}
	if meta.IdempotencyKey != "" {
		body, err := json.Marshal(res)
		if err != nil {
			return domain.CommandResult{}, fmt.Errorf("%s: encode result: %w", command, err)
		}
		w.update(1, `UPDATE idempotency_keys SET result = $3 WHERE scope = $1 AND key = $2`,
			meta.Actor.Subject, meta.IdempotencyKey, body)
	}
	hook := s.hooks.AfterWrite
	if err := w.flush(ctx, tx, hook == nil); err != nil {
		return domain.CommandResult{}, fmt.Errorf("%s: write: %w", command, err)
	}
	if hook != nil {
		if err := hook(ctx, tx, command); err != nil {
			return domain.CommandResult{}, err
		}
		if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
			return domain.CommandResult{}, fmt.Errorf("%s: commit: %w", command, err)
		}
	}
	committed = true
	return res, nil
}

// claimKey inserts the idempotency row or, when it exists, returns its stored
// result. A row inserted by a transaction still running blocks the insert
// until that transaction ends.
func claimKey(ctx context.Context, tx Querier, meta domain.CommandMeta) (domain.CommandResult, bool, error) {
	tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3)
		ON CONFLICT (scope, key) DO NOTHING`, meta.Actor.Subject, meta.IdempotencyKey, meta.RequestHash)
	if err != nil {
		return domain.CommandResult{}, false, fmt.Errorf("idempotency key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return domain.CommandResult{}, false, nil
	}
	var hash, body []byte
	err = tx.QueryRow(ctx, `SELECT request_hash, result FROM idempotency_keys WHERE scope = $1 AND key = $2`,
		meta.Actor.Subject, meta.IdempotencyKey).Scan(&hash, &body)
	if err != nil {
		return domain.CommandResult{}, false, fmt.Errorf("idempotency key: %w", err)
	}
	if string(hash) != string(meta.RequestHash) {
		return domain.CommandResult{}, false, errKeyReused
	}
	var res domain.CommandResult
	if err := json.Unmarshal(body, &res); err != nil {
		return domain.CommandResult{}, false, fmt.Errorf("idempotency key: stored result: %w", err)
	}
	return res, true, nil
}

// PruneIdempotencyKeys deletes keys older than maxAge and returns how many.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, maxAge time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval`, maxAge)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// PruneIdempotencyKeysEvery prunes keys older than maxAge every interval
// until ctx ends, then returns nil. A prune that fails is logged and tried
// again at the next tick: a key kept longer only answers a retry longer.
func (s *Store) PruneIdempotencyKeysEvery(ctx context.Context, every, maxAge time.Duration, logger *slog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n, err := s.PruneIdempotencyKeys(ctx, maxAge)
			switch {
			case err != nil && ctx.Err() == nil:
				logger.Warn("prune idempotency keys", "err", err)
			case n > 0:
				logger.Info("pruned idempotency keys", "count", n)
			}
		}
	}
}

// retryable reports transient conflicts worth one more attempt.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return false
}

// writer collects a command's writes and sends them to the server in one batch.
type writer struct {
	now    time.Time
	meta   domain.CommandMeta
	batch  pgx.Batch
	events []domain.Event
}

// flush queues the outbox rows and sends the batch, with COMMIT when commit
// is set.
func (w *writer) flush(ctx context.Context, tx *txn, commit bool) error {
	if len(w.events) > 0 {
		if err := w.queueOutbox(); err != nil {
			return err
		}
	}
	return tx.send(ctx, &w.batch, commit)
}

// update queues an UPDATE that must affect exactly want rows (its optimistic
// version guard); the server checks it, so a miss rolls the transaction back.
func (w *writer) update(want int64, sql string, args ...any) {
	sql, args = guardedSQL(want, sql, args)
	w.batch.Queue(sql, args...)
}

// write queues an INSERT: it writes its rows or fails the transaction.
func (w *writer) write(sql string, args ...any) { w.batch.Queue(sql, args...) }

func (w *writer) emit(events ...domain.Event) { w.events = append(w.events, events...) }

type outboxHeaders struct {
	TraceParent    string `json:"traceparent,omitempty"`
	Actor          string `json:"actor,omitempty"`
	Role           string `json:"role,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

func (w *writer) queueOutbox() error {
	n := len(w.events)
	ids := make([]uuid.UUID, n)
	aggTypes := make([]string, n)
	aggIDs := make([]string, n)
	versions := make([]int64, n)
	types := make([]string, n)
	schemas := make([]int32, n)
	payloads := make([]string, n)
	occurred := make([]time.Time, n)
	hdr, err := json.Marshal(outboxHeaders{TraceParent: w.meta.TraceParent, Actor: w.meta.Actor.Subject,
		Role: string(w.meta.Actor.Role), IdempotencyKey: w.meta.IdempotencyKey})
	if err != nil {
		return err
	}
	for i, ev := range w.events {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		body, err := json.Marshal(ev.Payload)
		if err != nil {
			return fmt.Errorf("encode %s: %w", ev.Type, err)
		}
		ids[i], aggTypes[i], aggIDs[i], versions[i] = id, ev.AggregateType, ev.AggregateID, ev.AggregateVersion
		types[i], schemas[i], payloads[i], occurred[i] = ev.Type, int32(ev.SchemaVersion), string(body), ev.OccurredAt
	}
	w.write(`INSERT INTO outbox_events
		(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, headers, occurred_at)
		SELECT u.id, u.agg_type, u.agg_id, u.version, u.event_type, u.schema_version, u.payload::jsonb, $8::jsonb, u.occurred_at
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[], $7::text[], $9::timestamptz[])
			WITH ORDINALITY AS u(id, agg_type, agg_id, version, event_type, schema_version, payload, occurred_at, ord)
		ORDER BY u.ord`,
		ids, aggTypes, aggIDs, versions, types, schemas, payloads, string(hdr), occurred)
	return nil
}
