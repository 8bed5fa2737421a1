package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Relay moves outbox events to a Publisher. Create it with New and start it
// with Run.
type Relay struct {
	cfg     Config
	pub     Publisher
	log     *slog.Logger
	metrics *metrics
	running atomic.Bool

	// confirmed is the LSN up to which every committed event is
	// acknowledged (CDC): what the slot is, or is about to be, told.
	confirmed   atomic.Uint64
	published   atomic.Uint64
	lastPublish atomic.Int64 // unix nanoseconds
	leader      atomic.Bool
	// streamLast is the stream's last sequence as the leader knows it: the
	// sequence after which it appends. Set by reconcile at the start of a
	// term or session, then advanced by publishAll only (one goroutine at a
	// time).
	streamLast uint64

	mu       sync.Mutex
	slotLSN  LSN // the slot's confirmed_flush_lsn, as last sampled
	slotLag  int64
	sampleOK bool
	// walStatus and safeWALSize are the slot's, as last sampled;
	// safeWALSize is nil when max_slot_wal_keep_size is unlimited.
	walStatus   string
	safeWALSize *int64
}

// New returns a Relay that publishes to pub. It validates cfg and registers
// the metrics; it does not connect.
func New(cfg Config, pub Publisher) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, errors.New("relay: New: Publisher is nil")
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Relay{
		cfg:     cfg,
		pub:     pub,
		log:     cfg.Logger.With("component", "relay", "mode", string(cfg.Mode), "slot", cfg.SlotName),
		metrics: m,
	}, nil
}

// Status is the relay's state for GET /v1/admin/relay.
type Status struct {
	Mode Mode   `json:"mode"`
	Slot string `json:"slot,omitempty"`
	// ConfirmedLSN is the position up to which every committed event is
	// published (CDC), e.g. "0/1A2B3C4"; "" before it is known.
	ConfirmedLSN string `json:"confirmed_lsn,omitempty"`
	// SlotLagBytes is how far the server's current WAL position is ahead
	// of ConfirmedLSN: WAL written that the relay has not yet confirmed.
	SlotLagBytes int64 `json:"slot_lag_bytes"`
	// WALStatus is the slot's pg_replication_slots.wal_status: reserved,
	// extended, unreserved (the WAL it needs is about to be removed) or lost
	// (invalidated; the relay re-creates the slot and backfills); "" while
	// the slot is missing.
	WALStatus string `json:"wal_status,omitempty"`
	// SafeWALSizeBytes is how much more WAL may be written before the slot
	// is invalidated; absent when max_slot_wal_keep_size is unlimited.
	SafeWALSizeBytes *int64    `json:"safe_wal_size_bytes,omitempty"`
	Published        uint64    `json:"published"`
	LastPublishAt    time.Time `json:"last_publish_at,omitzero"`
	// Leader is true on the one relay that streams; standbys report false.
	Leader bool `json:"leader"`
}

// Status reports what the relay has done. Safe for concurrent use.
func (r *Relay) Status() Status {
	s := Status{
		Mode:      r.cfg.Mode,
		Published: r.published.Load(),
		Leader:    r.leader.Load(),
	}
	if ns := r.lastPublish.Load(); ns != 0 {
		s.LastPublishAt = time.Unix(0, ns).UTC()
	}
	if r.cfg.Mode == ModeCDC {
		s.Slot = r.cfg.SlotName
		r.mu.Lock()
		lsn, lag, ok := r.slotLSN, r.slotLag, r.sampleOK
		s.WALStatus, s.SafeWALSizeBytes = r.walStatus, r.safeWALSize
		r.mu.Unlock()
		if mine := LSN(r.confirmed.Load()); mine > lsn {
			// Acknowledged and about to be confirmed; the sample lags.
			lag -= min(lag, int64(mine-lsn))
			lsn = mine
		}
		if ok || lsn != 0 {
			s.ConfirmedLSN = lsn.String()
		}
		s.SlotLagBytes = lag
	}
	return s
}

// Run works until ctx ends: it waits to become the leader (one relay per
// slot works, the others stand by), installs what its mode needs, and
// relays events. When ctx ends it stops reading, waits up to DrainTimeout
// for the acknowledgements of events already sent, confirms them and
// returns nil. It returns an error only for conditions retrying cannot fix:
// wal_level is not logical (ErrWALLevel, checked at once in CDC mode), the
// slot or publication is unusable, or an outbox row cannot be decoded.
// Run may be called once.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("relay: Run called more than once")
	}
	if r.cfg.Mode == ModeCDC {
		if err := r.checkWALLevel(ctx); err != nil {
			return err
		}
	}
	pool, err := r.newPool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	if r.cfg.Mode == ModeCDC {
		wg.Go(func() { r.sampleSlot(sampleCtx, pool) })
	}

	for {
		lock, err := r.awaitLeadership(ctx)
		if err != nil || lock == nil {
			return err
		}
		err = r.lead(ctx, lock, pool)
		if ctx.Err() != nil {
			return nil
		}
		if isPermanent(err) {
			return err
		}
		// Whatever ended the term (a broken session, a failing server)
		// may well hit this process again: give a standby the first try.
		r.log.Warn("relay: leadership ended; standing by", "err", err)
		if !sleep(ctx, 2*r.cfg.LeaderPollInterval) {
			return nil
		}
	}
}

// checkWALLevel fails fast when CDC cannot work on this server. A server
// that does not answer is not a reason to stop: the relay waits for it.
func (r *Relay) checkWALLevel(ctx context.Context) error {
	conn, err := r.cfg.connect(ctx, "check")
	if err != nil {
		r.log.Warn("relay: cannot check wal_level yet", "err", err)
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := CheckWALLevel(ctx, conn); errors.Is(err, ErrWALLevel) {
		return err
	}
	return nil
}

// lead does the leader's work while it holds lock.
func (r *Relay) lead(ctx context.Context, lock *pgx.Conn, pool *pgxpool.Pool) error {
	t, release := newTerm(ctx, r.cfg.DrainTimeout)
	defer release()
	defer lock.Close(context.WithoutCancel(ctx))
	r.leader.Store(true)
	r.metrics.leader.Set(1)
	defer func() {
		r.leader.Store(false)
		r.metrics.leader.Set(0)
	}()
	r.log.Info("relay: leading", "lock_key", r.cfg.LeaderLockKey)

	// A missing table (migrations not run yet) or a server restart is
	// waited out; a misconfiguration is not.
	for bo := newBackoff(); ; {
		err := install(t.stop, r.cfg)
		if err == nil {
			break
		}
		if isPermanent(err) || t.stop.Err() != nil {
			return err
		}
		delay := bo.NextBackOff()
		r.log.Warn("relay: install failed; retrying", "err", err, "retry_in", delay)
		if !sleep(t.stop, delay) {
			return err
		}
	}
	if r.cfg.Mode == ModePoll {
		// The lock session does the polling too: if it dies, so does the
		// leadership, and no row is marked by a relay that lost it.
		if err := r.reconcileUntilDone(t, lock); err != nil {
			return err
		}
		if err := r.retireSlot(t.stop, lock); err != nil {
			return err
		}
		return r.poll(t, lock)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	watchCtx, stopWatch := context.WithCancel(t.stop)
	defer stopWatch()
	wg.Go(func() { r.watchLock(watchCtx, t, lock) })
	wg.Go(func() { r.heartbeat(watchCtx, pool) })
	wg.Go(func() { r.keepLedger(watchCtx, pool) })
	return r.streamUntilStopped(t, pool)
}

// reconcileUntilDone reconciles the ledger with the stream, retrying while
// the stream or the database does not answer.
func (r *Relay) reconcileUntilDone(t *term, db execer) error {
	for bo := newBackoff(); ; {
		last, err := r.reconcile(t.stop, db)
		if err == nil {
			r.streamLast = last
			return nil
		}
		if isPermanent(err) || t.stop.Err() != nil {
			return err
		}
		delay := bo.NextBackOff()
		r.log.Warn("relay: cannot learn what the stream holds; retrying", "err", err, "retry_in", delay)
		if !sleep(t.stop, delay) {
			return err
		}
	}
}

// retireSlot drops the CDC slot of this relay's name when the poll relay
// takes over: the poll relay publishes in another order than the slot
// would, so the slot could not resume after it, and it would pin WAL.
func (r *Relay) retireSlot(ctx context.Context, conn *pgx.Conn) error {
	tag, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name = $1 AND NOT active`, r.cfg.SlotName)
	if err != nil {
		return fmt.Errorf("relay: drop the CDC slot %s: %w", r.cfg.SlotName, err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM relay_slots WHERE slot_name = $1`, r.cfg.SlotName); err != nil {
		return fmt.Errorf("relay: drop the CDC slot %s: %w", r.cfg.SlotName, err)
	}
	if tag.RowsAffected() > 0 {
		r.log.Info("relay: dropped the CDC replication slot: the poll relay publishes now; CDC re-creates it and backfills")
	}
	return nil
}

// watchLock ends the term as soon as the session holding the leader lock is
// gone: another relay may hold the lock a moment later.
func (r *Relay) watchLock(ctx context.Context, t *term, lock *pgx.Conn) {
	tick := time.NewTicker(r.cfg.LeaderPollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.DeadPeerTimeout/2)
		err := lock.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			t.lose(fmt.Errorf("%w: lock session: %v", errLeadershipLost, err))
			return
		}
	}
}

var errLeadershipLost = errors.New("relay: leadership lost")

// awaitLeadership returns a session holding the leader lock, or nil when ctx
// ends first. Standbys retry every LeaderPollInterval.
func (r *Relay) awaitLeadership(ctx context.Context) (*pgx.Conn, error) {
	var conn *pgx.Conn
	bo := newBackoff()
	logged := false
	for {
		if conn == nil {
			c, err := r.cfg.connect(ctx, "leader")
			if err != nil {
				if ctx.Err() != nil {
					return nil, nil
				}
				r.log.Warn("relay: cannot reach PostgreSQL; retrying", "err", err)
				if !sleep(ctx, bo.NextBackOff()) {
					return nil, nil
				}
				continue
			}
			conn = c
		}
		var got bool
		err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, r.cfg.LeaderLockKey).Scan(&got)
		switch {
		case err != nil:
			conn.Close(context.WithoutCancel(ctx))
			conn = nil
			if ctx.Err() != nil {
				return nil, nil
			}
			r.log.Warn("relay: leader election failed; retrying", "err", err)
			if !sleep(ctx, bo.NextBackOff()) {
				return nil, nil
			}
			continue
		case got:
			return conn, nil
		}
		bo.Reset()
		if !logged {
			logged = true
			r.log.Info("relay: standing by: another relay holds the leader lock", "holder", lockHolder(ctx, conn, r.cfg.LeaderLockKey))
		}
		if !sleep(ctx, r.cfg.LeaderPollInterval) {
			conn.Close(context.WithoutCancel(ctx))
			return nil, nil
		}
	}
}

// lockHolder describes the session holding the advisory lock key, for logs.
func lockHolder(ctx context.Context, conn *pgx.Conn, key int64) string {
	var pid int32
	var app, addr string
	err := conn.QueryRow(ctx, `SELECT a.pid, a.application_name, coalesce(host(a.client_addr), 'local')
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.classid = (($1::bigint >> 32) & 4294967295)::oid AND l.objid = ($1::bigint & 4294967295)::oid
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`, key).Scan(&pid, &app, &addr)
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("pid %d (%s, %s)", pid, app, addr)
}

// sampleSlot keeps the slot's confirmed position, lag and WAL status fresh,
// on standbys too, for Status and the metrics. It warns when the slot's WAL
// is no longer reserved and reports an invalidated slot as an error.
func (r *Relay) sampleSlot(ctx context.Context, pool *pgxpool.Pool) {
	tick := time.NewTicker(r.cfg.StatusInterval)
	defer tick.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, r.cfg.StatusInterval)
		var lsnText, walStatus *string
		var lag, safe *int64
		err := pool.QueryRow(qctx, `SELECT confirmed_flush_lsn::text,
				pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status, safe_wal_size
			FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.SlotName).Scan(&lsnText, &lag, &walStatus, &safe)
		cancel()
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			r.noteWALStatus("", nil)
		case err == nil:
			status := ""
			if walStatus != nil {
				status = *walStatus
			}
			r.noteWALStatus(status, safe)
			if lsnText != nil && lag != nil {
				if lsn, perr := parseLSN(*lsnText); perr == nil {
					r.mu.Lock()
					r.slotLSN, r.slotLag, r.sampleOK = lsn, *lag, true
					r.mu.Unlock()
					r.metrics.slotLag.Set(float64(*lag))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// walStatuses are the values of pg_replication_slots.wal_status.
var walStatuses = []string{"reserved", "extended", "unreserved", "lost"}

// noteWALStatus records a sample of the slot's WAL status and logs a change
// for the worse.
func (r *Relay) noteWALStatus(status string, safe *int64) {
	r.mu.Lock()
	prev := r.walStatus
	r.walStatus, r.safeWALSize = status, safe
	r.mu.Unlock()
	for _, s := range walStatuses {
		v := 0.0
		if s == status {
			v = 1
		}
		r.metrics.walStatus.WithLabelValues(s).Set(v)
	}
	if safe != nil {
		r.metrics.safeWALSize.Set(float64(*safe))
	} else {
		r.metrics.safeWALSize.Set(-1)
	}
	if status == prev {
		return
	}
	switch status {
	case "unreserved":
		r.log.Warn("relay: replication slot's WAL is unreserved: it is more than max_slot_wal_keep_size behind "+
			"and PostgreSQL will invalidate it at the next checkpoint unless the relay catches up",
			"safe_wal_size", safe)
	case "lost":
		r.log.Error("relay: replication slot is invalidated (wal_status=lost): PostgreSQL removed WAL it still " +
			"needed; the leading relay re-creates it and backfills from the outbox")
	}
}

// heartbeat writes a small transactional logical message into the WAL every
// HeartbeatInterval. It reaches the relay as an otherwise empty transaction
// whose commit the relay confirms once everything before it is published,
// so the slot advances past WAL written by other tables (which the
// publication filters out) instead of pinning it. The message is
// transactional because only a commit flushes WAL at once; a
// non-transactional message could sit unflushed, and unsent, in an idle
// server.
func (r *Relay) heartbeat(ctx context.Context, pool *pgxpool.Pool) {
	tick := time.NewTicker(r.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		hctx, cancel := context.WithTimeout(ctx, r.cfg.HeartbeatInterval)
		_, err := pool.Exec(hctx, `SELECT pg_logical_emit_message(true, $1, '')`, heartbeatPrefix)
		cancel()
		if err != nil && ctx.Err() == nil {
			r.log.Warn("relay: heartbeat failed", "err", err)
		}
	}
}

// keepLedger marks, every LedgerInterval, the rows of the events the CDC
// relay appended since the ledger's mark, reading their ids back from the
// stream. Off the publishing path: the CDC relay finds its place from the
// stream's last message, and the marks serve the backfill, the poll relay
// and the outbox prune, each of which reconciles first or keeps unmarked
// rows anyway.
func (r *Relay) keepLedger(ctx context.Context, pool *pgxpool.Pool) {
	tick := time.NewTicker(r.cfg.LedgerInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, _, err := r.reconcileFrom(ctx, pool); err != nil && ctx.Err() == nil {
			r.log.Warn("relay: marking what the stream holds failed; retrying at the next interval", "err", err)
		}
	}
}

// heartbeatPrefix marks the relay's heartbeat messages in the WAL.
const heartbeatPrefix = "jetcqrs.heartbeat"

// noteAcked records events the publisher acknowledged.
func (r *Relay) noteAcked(events []Event) {
	now := time.Now()
	for i := range events {
		at := events[i].CommitTime
		if at.IsZero() {
			at = events[i].OccurredAt
		}
		r.metrics.commitToAck.Observe(max(now.Sub(at), 0).Seconds())
	}
	r.metrics.published.Add(float64(len(events)))
	r.published.Add(uint64(len(events)))
	r.lastPublish.Store(now.UnixNano())
}

// publishAll appends events to the stream in order after streamLast,
// retrying the unacknowledged suffix with backoff until everything is
// stored; acked is called, in order, with each stored prefix and the stream
// sequence of its first event. After a failure it asks the stream what the
// failed publishes stored before it sends again, so nothing is appended
// twice. After stop ends no retry is started (the events are published by
// whoever relays next); hard ends the publishing in flight.
func (r *Relay) publishAll(stop, hard context.Context, events []Event, acked func([]Event, uint64) error) error {
	bo := newBackoff()
	take := func(n int) error {
		first := r.streamLast + 1
		r.streamLast += uint64(n)
		r.noteAcked(events[:n])
		if err := acked(events[:n], first); err != nil {
			return err
		}
		events = events[n:]
		bo.Reset()
		return nil
	}
	for len(events) > 0 {
		n, err := r.pub.PublishBatch(hard, r.streamLast, events)
		if n < 0 || n > len(events) {
			return permanent(fmt.Errorf("relay: Publisher acknowledged %d of %d events", n, len(events)))
		}
		if n > 0 {
			if aerr := take(n); aerr != nil {
				return aerr
			}
		}
		if len(events) == 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("relay: Publisher acknowledged %d events and returned no error", n)
		}
		if err := r.afterPublishFailure(stop, hard, bo, err, events, take); err != nil {
			return err
		}
	}
	return nil
}

// afterPublishFailure handles a publish that failed with err, leaving
// unacked without acknowledgement: an event the stream can never store
// stops the relay; otherwise it waits (backing off) until the stream says
// which of unacked it stored after all, hands their number to take, and
// returns nil to publish the rest. Until then nothing is sent. It returns
// err once stop ends, and what learning the stream's contents cannot
// recover from.
func (r *Relay) afterPublishFailure(stop, hard context.Context, bo backoff.BackOff, err error, unacked []Event, take func(int) error) error {
	if errors.Is(err, ErrEventRejected) {
		if len(unacked) == 0 {
			return permanent(err)
		}
		return permanent(fmt.Errorf("relay: event %s (seq %d, %s %s v%d): %w", unacked[0].ID, unacked[0].Seq,
			unacked[0].AggregateType, unacked[0].AggregateID, unacked[0].AggregateVersion, err))
	}
	for {
		if stop.Err() != nil {
			return err
		}
		delay := bo.NextBackOff()
		r.log.Warn("relay: publish failed; retrying the unacknowledged events", "err", err,
			"unacked", len(unacked), "retry_in", delay)
		if !sleep(stop, delay) {
			return err
		}
		stored, lerr := r.learnStored(hard, unacked)
		if isPermanent(lerr) || errors.Is(lerr, errResync) {
			return lerr
		}
		if lerr != nil {
			err = lerr
			continue
		}
		if stored > 0 {
			r.log.Info("relay: the stream stored events whose acknowledgement was lost", "events", stored)
			if aerr := take(stored); aerr != nil {
				return aerr
			}
			bo.Reset()
		}
		return nil
	}
}

// term is one period of leadership.
type term struct {
	// stop ends when Run's context ends or the leadership is lost: take no
	// new work.
	stop context.Context
	// hard ends when the leadership is lost, or DrainTimeout after Run's
	// context ended: abandon the work in flight.
	hard context.Context
	// lose ends the term at once.
	lose func(error)
}

var errDrainTimeout = errors.New("relay: drain timeout")

func newTerm(ctx context.Context, drain time.Duration) (*term, func()) {
	hard, cancelHard := context.WithCancelCause(context.WithoutCancel(ctx))
	stop, cancelStop := context.WithCancelCause(hard)
	var mu sync.Mutex
	var timer *time.Timer
	stopAfter := context.AfterFunc(ctx, func() {
		cancelStop(context.Cause(ctx))
		mu.Lock()
		timer = time.AfterFunc(drain, func() { cancelHard(errDrainTimeout) })
		mu.Unlock()
	})
	release := func() {
		stopAfter()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancelHard(context.Canceled)
	}
	return &term{stop: stop, hard: hard, lose: func(err error) { cancelHard(err) }}, release
}

// connect opens a session with the settings the relay relies on: text
// output in ISO format and UTC, and server-side dead-peer detection.
func (c Config) connect(ctx context.Context, purpose string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("relay: DatabaseURL: %w", err)
	}
	c.sessionParams(cfg.RuntimeParams, purpose)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("relay: connect (%s): %w", purpose, err)
	}
	return conn, nil
}

func (r *Relay) newPool(ctx context.Context) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("relay: DatabaseURL: %w", err)
	}
	r.cfg.sessionParams(cfg.ConnConfig.RuntimeParams, "pool")
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("relay: connection pool: %w", err)
	}
	return pool, nil
}

// replicationConfig is the walsender session: its wal_sender_timeout ends
// the session of a relay that went silent, freeing the slot for a standby.
func (r *Relay) replicationConfig() (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("relay: DatabaseURL: %w", err)
	}
	r.cfg.sessionParams(cfg.RuntimeParams, "replication")
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["wal_sender_timeout"] = strconv.FormatInt(r.cfg.DeadPeerTimeout.Milliseconds(), 10)
	return cfg, nil
}

func (c Config) sessionParams(p map[string]string, purpose string) {
	if p["application_name"] == "" {
		p["application_name"] = "jetcqrs-relay"
	}
	p["TimeZone"] = "UTC"
	p["DateStyle"] = "ISO, MDY"
	if purpose != "replication" {
		secs := max(int(c.DeadPeerTimeout/time.Second), 3)
		p["tcp_keepalives_idle"] = strconv.Itoa(secs / 3)
		p["tcp_keepalives_interval"] = strconv.Itoa(max(secs/9, 1))
		p["tcp_keepalives_count"] = "3"
		p["tcp_user_timeout"] = strconv.FormatInt(c.DeadPeerTimeout.Milliseconds(), 10)
	}
}

func newBackoff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     100 * time.Millisecond,
		RandomizationFactor: 0.3,
		Multiplier:          2,
		MaxInterval:         5 * time.Second,
	}
}

// sleep waits for d and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// permanentError marks an error retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error {
	if err == nil || isPermanent(err) {
		return err
	}
	return &permanentError{err: err}
}

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, errDecode) || errors.Is(err, ErrWALLevel)
}

// parseLSN parses PostgreSQL's X/X form.
func parseLSN(s string) (LSN, error) {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("relay: LSN %q: %w", s, err)
	}
	return LSN(uint64(hi)<<32 | uint64(lo)), nil
}
