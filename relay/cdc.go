package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
)

// streamUntilStopped streams the slot for the whole term, reconnecting with
// backoff after failures. A slot still held by the previous leader's
// walsender (it is exiting) is retried quickly.
func (r *Relay) streamUntilStopped(t *term, pool *pgxpool.Pool) error {
	bo := newBackoff()
	for {
		started := time.Now()
		err := r.stream(t, pool)
		if t.stop.Err() != nil {
			if cause := context.Cause(t.hard); t.hard.Err() != nil && errors.Is(cause, errLeadershipLost) {
				return cause
			}
			return nil
		}
		if isPermanent(err) {
			return err
		}
		if time.Since(started) > time.Minute {
			bo.Reset()
		}
		delay := bo.NextBackOff()
		if errors.Is(err, errSlotActive) {
			delay = min(delay, 200*time.Millisecond)
			r.log.Info("relay: slot still in use by the previous walsender; retrying", "err", err, "retry_in", delay)
		} else {
			r.log.Warn("relay: replication stream failed; reconnecting", "err", err, "retry_in", delay)
		}
		if !sleep(t.stop, delay) {
			return nil
		}
	}
}

var errSlotActive = errors.New("relay: replication slot is active")

// stream runs one replication session: a reader decoding the WAL into
// committed transactions and a publisher goroutine publishing them.
func (r *Relay) stream(t *term, pool *pgxpool.Pool) error {
	snapshot, backfilledSeq, err := r.prepareSlot(t.stop, pool)
	if err != nil {
		return err
	}
	if backfilledSeq < 0 {
		// The ledger is brought up to the stream before the backfill asks
		// it what the stream lacks.
		last, err := r.reconcile(t.stop, pool)
		if err != nil {
			return err
		}
		r.streamLast = last
		if backfilledSeq, err = r.backfill(t, pool, snapshot); err != nil {
			return err
		}
	}
	// The slot re-sends what followed its confirmed position, and the
	// stream may hold a commit-ordered prefix of it (acknowledged, not yet
	// confirmed): up to the position of its last message, if that message
	// is the slot's own (after the backfill; an older slot's positions say
	// nothing about this one, whose LSNs may even repeat them after a
	// PostgreSQL failover).
	// The position is read from the newest message the relay appended: a
	// message re-published by hand keeps its original's (older) position,
	// and another writer's has none, so the stream's last message may not
	// say how far the slot's events are in.
	last, _, err := r.pub.Last(t.stop)
	if err != nil {
		return fmt.Errorf("relay: stream's last message: %w", err)
	}
	r.streamLast = last
	heldSeq, heldText, err := r.pub.LastPosition(t.stop, uint64(backfilledSeq))
	if err != nil {
		return fmt.Errorf("relay: stream's last commit position: %w", err)
	}
	var held position
	if heldSeq > 0 {
		var ok bool
		if held, ok = parsePosition(heldText); !ok {
			return permanent(fmt.Errorf("%w: stream message %d has the commit position %q, which the relay cannot read",
				errStreamDiverged, heldSeq, heldText))
		}
	}
	if last > max(heldSeq, uint64(backfilledSeq)) {
		r.log.Warn("relay: the stream's last messages were not appended by this relay (re-published by hand, or "+
			"another writer); resuming after its own last message", "foreign", last-max(heldSeq, uint64(backfilledSeq)),
			"own_last_seq", heldSeq, "stream_last_seq", last)
	}

	cfg, err := r.replicationConfig()
	if err != nil {
		return permanent(err)
	}
	conn, err := pgconn.ConnectConfig(t.stop, cfg)
	if err != nil {
		return fmt.Errorf("relay: replication connection: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(ctx)
	}()

	var slotText string
	err = pool.QueryRow(t.stop, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`,
		r.cfg.SlotName).Scan(&slotText)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("relay: replication slot %s does not exist (dropped while the relay runs?)", r.cfg.SlotName)
	}
	if err != nil {
		return fmt.Errorf("relay: read slot %s: %w", r.cfg.SlotName, err)
	}
	slotLSN, err := parseLSN(slotText)
	if err != nil {
		return err
	}
	// What this process acknowledged may be ahead of the slot when the last
	// status update was lost with the connection; starting there skips
	// re-sending it. The server starts at the slot's position otherwise.
	start := max(slotLSN, LSN(r.confirmed.Load()))
	r.confirmed.Store(uint64(start))

	pub := strings.ReplaceAll(pgx.Identifier{r.cfg.PublicationName}.Sanitize(), `'`, `''`)
	err = pglogrepl.StartReplication(t.stop, conn, r.cfg.SlotName, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '2'",
			"publication_names '" + pub + "'",
			"messages 'true'",
			"streaming 'on'",
		},
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use
			return fmt.Errorf("%w: %v", errSlotActive, err)
		}
		return fmt.Errorf("relay: start replication: %w", err)
	}
	r.log.Info("relay: streaming", "start_lsn", start.String(), "publication", r.cfg.PublicationName)

	s := &cdcStream{
		r:         r,
		conn:      conn,
		relations: make(map[uint32]*outboxRelation),
		streamed:  make(map[uint32]*txBuffer),
		queue:     newCommitQueue(r.cfg.MaxPendingEvents),
		pubDone:   make(chan struct{}),
	}
	pipeStop, cancelPipeStop := context.WithCancel(t.stop)
	defer cancelPipeStop()
	pipeHard, cancelPipeHard := context.WithCancel(t.hard)
	defer cancelPipeHard()
	go func() {
		defer close(s.pubDone)
		s.pubErr = r.publishCommitted(pipeStop, pipeHard, s.queue, held)
	}()

	readErr := s.read(t.stop)
	sessionOK := readErr == nil || errors.Is(readErr, errPublisherStopped) // the publisher failed, not the session
	if !sessionOK || t.hard.Err() != nil {
		// The session is broken or the leadership is gone: nothing in
		// flight can be confirmed here any more.
		cancelPipeHard()
	}
	cancelPipeStop()
	<-s.pubDone
	if sessionOK && t.hard.Err() == nil {
		// Draining on shutdown, or stopping on an event the stream
		// refuses: confirm what the acknowledgements covered.
		if err := s.sendStatus(); err != nil {
			r.log.Warn("relay: final status update failed", "err", err)
		} else {
			r.log.Info("relay: stopped", "confirmed_lsn", LSN(r.confirmed.Load()).String())
		}
	}
	if readErr != nil {
		return readErr
	}
	if isPermanent(s.pubErr) {
		return s.pubErr
	}
	return nil
}

// committedTx is a committed transaction's events, in WAL order.
type committedTx struct {
	events []Event
	// end is the end of the commit record: once every event is acknowledged
	// the slot may be confirmed up to here, and a restart skips it.
	end LSN
}

// txBuffer collects a transaction's events until its commit.
type txBuffer struct {
	events []Event
	// subxids[i] is the (sub)transaction that wrote events[i]; kept for
	// streamed transactions only, where a subtransaction abort arrives as
	// a StreamAbort naming it.
	subxids []uint32
}

func (b *txBuffer) dropSubxact(xid uint32) {
	keep := 0
	for i := range b.events {
		if b.subxids[i] != xid {
			b.events[keep], b.subxids[keep] = b.events[i], b.subxids[i]
			keep++
		}
	}
	clear(b.events[keep:])
	b.events, b.subxids = b.events[:keep], b.subxids[:keep]
}

// cdcStream decodes one replication session. Only its goroutine uses conn.
type cdcStream struct {
	r    *Relay
	conn *pgconn.PgConn
	// relations caches the Relation messages: the outbox's decoder, or nil
	// for another table.
	relations map[uint32]*outboxRelation
	// open is the transaction between Begin and Commit (not streamed).
	open *txBuffer
	// streamed holds in-progress streamed transactions by top-level xid.
	streamed  map[uint32]*txBuffer
	inStream  bool
	streamXid uint32
	queue     *commitQueue
	// pubDone is closed when the publisher goroutine has returned pubErr.
	pubDone chan struct{}
	pubErr  error
}

// read receives the WAL until ctx ends (nil) or the session fails. It
// reports the confirmed position every StatusInterval and whenever the
// server asks.
func (s *cdcStream) read(ctx context.Context) error {
	// Reads wait on a socket deadline rather than a context: pgconn watches
	// a context with a goroutine per call, too dear for every WAL message.
	netConn := s.conn.Conn()
	stopWaiting := context.AfterFunc(ctx, func() { _ = netConn.SetReadDeadline(time.Now()) })
	defer func() {
		stopWaiting()
		_ = netConn.SetReadDeadline(time.Time{})
	}()
	nextStatus := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.pubDone:
			return s.publisherStopped()
		default:
		}
		if !time.Now().Before(nextStatus) {
			if err := s.sendStatus(); err != nil {
				return err
			}
			nextStatus = time.Now().Add(s.r.cfg.StatusInterval)
		}
		if err := netConn.SetReadDeadline(nextStatus); err != nil {
			return fmt.Errorf("relay: replication stream: %w", err)
		}
		if ctx.Err() != nil {
			return nil // cancelled before the deadline was set; do not wait for it
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("relay: replication stream: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("relay: keepalive: %w", err)
				}
				if ka.ReplyRequested {
					nextStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("relay: XLogData: %w", err)
				}
				if err := s.handle(ctx, xld.WALData); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("relay: replication stream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("relay: the server ended the replication stream")
		}
	}
}

var errPublisherStopped = errors.New("relay: publisher stopped")

// publisherStopped is the reader's error once the publisher goroutine has
// returned (pubDone is closed).
func (s *cdcStream) publisherStopped() error {
	if s.pubErr != nil {
		return fmt.Errorf("%w: %w", errPublisherStopped, s.pubErr)
	}
	return errPublisherStopped
}

// sendStatus tells the server that everything before the confirmed LSN is
// published. Write, flush and apply are all that position: the flush
// position is what advances the slot, and it must never pass an event the
// stream has not stored.
func (s *cdcStream) sendStatus() error {
	lsn := pglogrepl.LSN(s.r.confirmed.Load())
	if lsn == 0 {
		return nil // pglogrepl would report a zero flush position as the write position
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
	})
	if err != nil {
		return fmt.Errorf("relay: standby status update: %w", err)
	}
	return nil
}

// handle decodes one pgoutput message.
func (s *cdcStream) handle(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return decodeErrorf("empty pgoutput message")
	}
	if data[0] == byte(pglogrepl.MessageTypeInsert) {
		return s.insert(data)
	}
	msg, err := pglogrepl.ParseV2(data, s.inStream)
	if err != nil {
		return decodeErrorf("pgoutput message %q: %v", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessageV2:
		rel, err := newOutboxRelation(&m.RelationMessage)
		if err != nil {
			return err
		}
		s.relations[m.RelationID] = rel
	case *pglogrepl.BeginMessage:
		if s.open != nil {
			return decodeErrorf("Begin of xid %d inside another transaction", m.Xid)
		}
		s.open = &txBuffer{}
	case *pglogrepl.CommitMessage:
		if s.open == nil {
			return decodeErrorf("Commit at %s outside a transaction", m.CommitLSN)
		}
		events := s.open.events
		s.open = nil
		return s.commit(ctx, events, LSN(m.TransactionEndLSN), m.CommitTime)
	case *pglogrepl.StreamStartMessageV2:
		s.inStream, s.streamXid = true, m.Xid
		if s.streamed[m.Xid] == nil {
			s.streamed[m.Xid] = &txBuffer{}
		}
	case *pglogrepl.StreamStopMessageV2:
		s.inStream = false
	case *pglogrepl.StreamCommitMessageV2:
		var events []Event
		if b := s.streamed[m.Xid]; b != nil {
			events = b.events
			delete(s.streamed, m.Xid)
		}
		return s.commit(ctx, events, LSN(m.TransactionEndLSN), m.CommitTime)
	case *pglogrepl.StreamAbortMessageV2:
		b := s.streamed[m.Xid]
		switch {
		case b == nil:
		case m.SubXid == m.Xid:
			delete(s.streamed, m.Xid)
		default:
			b.dropSubxact(m.SubXid)
		}
	case *pglogrepl.LogicalDecodingMessageV2:
		// A transactional heartbeat is confirmed through its transaction's
		// commit. A non-transactional one arrives outside any transaction;
		// with nothing open it marks a position that can be confirmed once
		// everything queued before it is published.
		if !m.Transactional && m.Prefix == heartbeatPrefix && s.open == nil && !s.inStream {
			return s.commit(ctx, nil, LSN(m.LSN), time.Time{})
		}
	}
	// Type, Origin, and Update/Delete/Truncate (the publication sends
	// inserts only) carry nothing for the relay.
	return nil
}

func (s *cdcStream) insert(data []byte) error {
	xid, relID, tuple, err := parseInsert(data, s.inStream)
	if err != nil {
		return err
	}
	rel, known := s.relations[relID]
	if !known {
		return decodeErrorf("Insert into relation %d before its Relation message", relID)
	}
	if rel == nil {
		return nil
	}
	ev, err := rel.decode(tuple)
	if err != nil {
		return err
	}
	if s.inStream {
		b := s.streamed[s.streamXid]
		b.events = append(b.events, ev)
		b.subxids = append(b.subxids, xid)
		return nil
	}
	if s.open == nil {
		return decodeErrorf("Insert outside a transaction")
	}
	s.open.events = append(s.open.events, ev)
	return nil
}

// commit queues a committed transaction for publishing, waiting while the
// queue is full and reporting status meanwhile so the server does not time
// the session out.
func (s *cdcStream) commit(ctx context.Context, events []Event, end LSN, at time.Time) error {
	for i := range events {
		events[i].CommitLSN, events[i].TxIndex, events[i].CommitTime = end, i, at
	}
	tx := &committedTx{events: slices.Clip(events), end: end}
	if s.queue.tryPush(tx) {
		return nil
	}
	tick := time.NewTicker(s.r.cfg.StatusInterval)
	defer tick.Stop()
	for !s.queue.tryPush(tx) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.queue.notFull:
		case <-s.pubDone:
			return s.publisherStopped()
		case <-tick.C:
			if err := s.sendStatus(); err != nil {
				return err
			}
		}
	}
	return nil
}

// publishCommitted publishes queued transactions in commit order,
// pipelined: batches of up to BatchSize events (which may span
// transactions or split a large one) go to Publisher.PublishStream one
// after the other without waiting for the previous batch's
// acknowledgements. A transaction's end LSN becomes the confirmed position
// only when its last event, and every event before it, is acknowledged.
//
// After a failure (a refusal, a timeout, a lost connection: every publish
// in flight behind the failed one is then refused by the stream, or, after
// an unknown outcome, stored in order) nothing more is sent until the
// stream says how far it got (learnStored); then the unacknowledged events
// are sent again after the stream's last sequence. Every publish naming a
// given expected sequence carries the same event, in every round, so a
// publish of an earlier round that lands late (flushed after a reconnect)
// is either the event the stream needed there or refused.
func (r *Relay) publishCommitted(stop, hard context.Context, q *commitQueue, held position) error {
	f := &inFlight{r: r}
	// Until the first event the stream does not hold, each transaction is
	// checked against the position of the stream's last message.
	replaying := true
	bo := newBackoff()
	for {
		if stop.Err() != nil {
			return nil
		}
		before := f.acked
		err := r.publishRound(stop, hard, q, f, held, &replaying)
		if err == nil {
			return nil // stop ended and everything sent is acknowledged
		}
		if f.acked > before {
			bo.Reset()
		}
		if err := r.afterPublishFailure(stop, hard, bo, err, f.unacked(), func(n int) error {
			for range n {
				f.ack()
			}
			return nil
		}); err != nil {
			return err
		}
	}
}

// publishRound runs one PublishStream after r.streamLast: a builder
// goroutine sends first the events handed over before and not acknowledged,
// then the transactions it takes from q, while this goroutine counts the
// acknowledgements (f.ack). It returns nil when stop ended and everything
// sent was acknowledged, or the publisher's error.
func (r *Relay) publishRound(stop, hard context.Context, q *commitQueue, f *inFlight, held position, replaying *bool) error {
	batches := make(chan []Event, 4)
	roundDone := make(chan struct{})
	builderDone := make(chan struct{})
	go func() {
		defer close(builderDone)
		defer close(batches)
		var batch []Event
		flush := func() bool {
			if len(batch) == 0 {
				return true
			}
			select {
			case batches <- batch:
				batch = nil
				return true
			case <-roundDone:
				return false
			case <-stop.Done():
				return false // not sent: whoever relays next sends it
			}
		}
		for resend := f.unacked(); len(resend) > 0; {
			n := min(len(resend), r.cfg.BatchSize)
			batch = resend[:n:n]
			if !flush() {
				return
			}
			resend = resend[n:]
		}
		popCtx, cancel := context.WithCancel(stop)
		defer cancel()
		go func() {
			select {
			case <-roundDone:
				cancel()
			case <-popCtx.Done():
			}
		}()
		for {
			if popCtx.Err() != nil {
				return // what is not sent yet is sent by whoever relays next
			}
			tx, ok := q.tryPop()
			if !ok {
				// Nothing more waits: send what there is at once.
				if !flush() {
					return
				}
				if tx, ok = q.pop(popCtx); !ok {
					return
				}
			}
			f.add(tx)
			events := tx.events
			if *replaying {
				n := 0
				for n < len(events) && !held.before(events[n]) {
					n++
				}
				if n > 0 {
					r.metrics.skipped.Add(float64(n))
					r.log.Info("relay: skipped events the slot sent again that the stream already holds", "events", n)
					f.skip(n)
				}
				events = events[n:]
				*replaying = len(events) == 0
			}
			for len(events) > 0 {
				k := min(len(events), r.cfg.BatchSize-len(batch))
				batch = append(batch, events[:k]...)
				events = events[k:]
				if len(batch) == r.cfg.BatchSize && !flush() {
					return
				}
			}
		}
	}()
	_, err := r.pub.PublishStream(hard, r.streamLast, batches, f.ack)
	close(roundDone)
	<-builderDone
	if err == nil && stop.Err() == nil {
		err = errors.New("relay: Publisher.PublishStream returned before its batches ended")
	}
	return err
}

// inFlight tracks the transactions handed to the publisher, in commit
// order, until every event of each is acknowledged; then it confirms the
// transaction's end LSN. The builder adds transactions while the
// publisher's goroutine acknowledges events.
type inFlight struct {
	r  *Relay
	mu sync.Mutex
	// txs are the transactions handed over and not yet confirmed; the
	// first off events of txs[0] are acknowledged (or skipped). After every
	// change txs[0], if any, has an event that is not.
	txs []*committedTx
	off int
	// acked counts acknowledgements; only the publisher's goroutine (the
	// one running publishCommitted) uses it.
	acked uint64
}

// add hands tx over (before any of its events is sent).
func (f *inFlight) add(tx *committedTx) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.txs = append(f.txs, tx)
	f.settle()
}

// ack records that the stream stored the next event, at r.streamLast+1.
// Called on publishCommitted's goroutine only.
func (f *inFlight) ack() {
	f.acked++
	f.r.streamLast++
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(1, true)
}

// skip records that the stream already held the next n events.
func (f *inFlight) skip(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(n, false)
}

func (f *inFlight) advance(n int, acked bool) {
	for n > 0 && len(f.txs) > 0 {
		tx := f.txs[0]
		k := min(n, len(tx.events)-f.off)
		if acked {
			f.r.noteAcked(tx.events[f.off : f.off+k])
		}
		f.off += k
		n -= k
		f.settle()
	}
}

func (f *inFlight) settle() {
	for len(f.txs) > 0 && f.off == len(f.txs[0].events) {
		f.r.confirmed.Store(uint64(f.txs[0].end))
		f.txs[0] = nil
		f.txs = f.txs[1:]
		f.off = 0
	}
}

// unacked returns a copy of the events handed over and not acknowledged,
// in order.
func (f *inFlight) unacked() []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Event
	for i, tx := range f.txs {
		from := 0
		if i == 0 {
			from = f.off
		}
		out = append(out, tx.events[from:]...)
	}
	return out
}

// commitQueue hands committed transactions from the reader to the publisher
// (one goroutine each), bounded by the number of queued events.
type commitQueue struct {
	mu     sync.Mutex
	items  []*committedTx
	events int
	limit  int
	// notEmpty and notFull are signalled (without blocking) on push and pop.
	notEmpty chan struct{}
	notFull  chan struct{}
}

func newCommitQueue(limit int) *commitQueue {
	return &commitQueue{limit: limit, notEmpty: make(chan struct{}, 1), notFull: make(chan struct{}, 1)}
}

// weight counts an empty transaction as one event, so that heartbeats cannot
// pile up without bound either.
func weight(tx *committedTx) int { return max(len(tx.events), 1) }

// tryPush queues tx unless the queue is over its limit; an empty queue
// takes a transaction of any size (it cannot be split before its commit).
func (q *commitQueue) tryPush(tx *committedTx) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && q.events+weight(tx) > q.limit {
		return false
	}
	q.items = append(q.items, tx)
	q.events += weight(tx)
	signal(q.notEmpty)
	return true
}

func (q *commitQueue) tryPop() (*committedTx, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, false
	}
	tx := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	q.events -= weight(tx)
	signal(q.notFull)
	return tx, true
}

// pop waits for a transaction until ctx ends.
func (q *commitQueue) pop(ctx context.Context) (*committedTx, bool) {
	for {
		if tx, ok := q.tryPop(); ok {
			return tx, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-q.notEmpty:
		}
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
