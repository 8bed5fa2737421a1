package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Publisher defaults.
const (
	DefaultMaxInFlight = 4096
	DefaultAckTimeout  = 5 * time.Second
)

// ErrPublisherClosed is returned by PublishBatch after Close.
var ErrPublisherClosed = errors.New("nats: publisher closed")

// PublisherConfig configures a Publisher. Zero fields take defaults.
type PublisherConfig struct {
	// Stream is the stream the events go to (default EVENTS).
	Stream string
	// Partitions must be the stream's partition count (default 16); use
	// the StreamConfig given to EnsureStream.
	Partitions int
	// MaxInFlight bounds the events published and not yet acknowledged
	// (default 4096).
	MaxInFlight int
	// AckTimeout is how long an event may wait for its ack before it
	// counts as failed (default 5s). It must comfortably exceed the time
	// the server needs to store MaxInFlight events, or a slow but healthy
	// server causes needless failures and re-publishing.
	AckTimeout time.Duration
	// OnAck, if set, is called once for each event of a batch's
	// acknowledged prefix, in order, on the goroutine running PublishBatch
	// (or PublishStream), before it returns. It must not block. The relay uses it to
	// measure commit-to-ack latency.
	OnAck func(AckInfo)
}

func (c PublisherConfig) withDefaults() PublisherConfig {
	if c.Stream == "" {
		c.Stream = DefaultStreamName
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	return c
}

// Validate reports the first invalid field, after defaults are applied.
func (c PublisherConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Partitions < 1 || c.Partitions > MaxPartitions:
		return fmt.Errorf("nats: PublisherConfig.Partitions %d out of range 1-%d", c.Partitions, MaxPartitions)
	case c.MaxInFlight < 1:
		return fmt.Errorf("nats: PublisherConfig.MaxInFlight %d is not >= 1", c.MaxInFlight)
	case c.AckTimeout < 0:
		return fmt.Errorf("nats: PublisherConfig.AckTimeout %s is negative", c.AckTimeout)
	}
	return nil
}

// AckInfo describes one acknowledged event, for PublisherConfig.OnAck.
type AckInfo struct {
	Index    int    // position in the batch passed to PublishBatch (PublishStream: in the whole sequence)
	Event    *Event // the batch's element; do not retain or modify
	Sequence uint64 // the event's stream sequence
	SentAt   time.Time
	AckedAt  time.Time
}

// PublisherStats are cumulative counters since NewPublisher.
type PublisherStats struct {
	Published uint64    // events the stream acknowledged as stored
	Failed    uint64    // publishes that failed or timed out
	LastAck   time.Time // zero before the first ack
}

// ErrUnexpectedSequence is matched (errors.Is) by PublishBatch's error when
// the stream's last sequence was not the one the batch was published after:
// another writer appended to the stream, or an earlier publish of the batch
// failed and the server refused the ones behind it. The caller learns the
// stream's state again (Last, EventIDs) before it retries.
var ErrUnexpectedSequence = errors.New("nats: stream sequence is not the expected one")

// Publisher publishes batches of events to JetStream in order, pipelined:
// up to MaxInFlight asynchronous publishes are outstanding at once. It is
// meant to be the stream's only writer: every publish names the sequence
// the stream must end at before storing it (Nats-Expected-Last-Sequence),
// so the server stores a batch as a gap-free prefix, in slice order, and
// never stores an event after one it refused.
//
// It publishes on js's connection through its own asynchronous-publish
// context, so its window, ack timeout and pending acks are not shared with
// other users of js. Calls to PublishBatch are serialized.
type Publisher struct {
	js      jetstream.JetStream
	cfg     PublisherConfig
	logger  *slog.Logger
	pubOpts []jetstream.PublishOpt
	busy    chan struct{} // holds a token while a PublishBatch or Flush runs
	closed  atomic.Bool

	published, failed atomic.Uint64
	lastAck           atomic.Int64 // unix nanoseconds
}

// NewPublisher returns a Publisher for the connection behind js.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig, logger *slog.Logger) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	own, err := jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("nats: publisher: %w", err)
	}
	return &Publisher{
		js:     own,
		cfg:    cfg,
		logger: logger.With("component", "nats-publisher"),
		pubOpts: []jetstream.PublishOpt{
			// nats.go would otherwise re-send a publish that found no
			// stream 250ms later, behind the events published after it.
			jetstream.WithRetryAttempts(0),
			// Our window keeps nats.go's pending count under its limit,
			// except for publishes a cancelled batch left behind; wait for
			// those to time out rather than fail after nats.go's 200ms.
			jetstream.WithStallWait(cfg.AckTimeout),
			jetstream.WithExpectStream(cfg.Stream),
		},
		busy: make(chan struct{}, 1),
	}, nil
}

type pendingAck struct {
	index  int
	event  *Event
	fut    jetstream.PubAckFuture
	sentAt time.Time
}

// PublishBatch publishes events in slice order with Nats-Msg-Id = event id,
// keeping at most MaxInFlight unacknowledged, and waits until every
// published event is acknowledged or has failed. after is the stream's last
// sequence as the caller knows it: events[i] is stored only as sequence
// after+i+1 (its publish carries Nats-Expected-Last-Sequence after+i).
//
// Guarantee: acked is the length of the longest prefix events[:acked] whose
// every event the stream has acknowledged as stored; they hold sequences
// after+1 … after+acked. err is the first failure in slice order (nil when
// acked == len(events)). Because each publish names its predecessor's
// sequence, the server stores nothing after an event it refused (a definite
// rejection: the later events fail with ErrUnexpectedSequence) and never
// stores an event twice. After an unknown outcome (disconnect, ack
// timeout) the stream may hold more than the acked prefix, but always a
// prefix of events: the caller learns how much from Last and
// EventIDs before it retries.
//
// An event that fails Event.Msg's validation stops the batch there with an
// error matching ErrMalformedEvent; retrying it cannot succeed. If ctx ends,
// PublishBatch returns promptly with ctx's error and the prefix acked so far.
func (p *Publisher) PublishBatch(ctx context.Context, after uint64, events []Event) (acked int, err error) {
	if len(events) == 0 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if p.closed.Load() {
			return 0, ErrPublisherClosed
		}
		return 0, nil
	}
	batches := make(chan []Event, 1)
	batches <- events
	close(batches)
	return p.PublishStream(ctx, after, batches, nil)
}

// PublishStream is PublishBatch over a sequence of batches that arrive one
// by one: it publishes the events of every batch received from batches, in
// order, as one sequence (the first event as sequence after+1, the next as
// after+2, across batch boundaries), without waiting for one batch's
// acknowledgements before it publishes the next, so up to MaxInFlight
// publishes stay in flight across batches. acked, if not nil, is called on
// the calling goroutine, in order, once for each event of the acknowledged
// prefix (its index in the whole sequence), before PublishStream returns;
// it must not block for long, since acknowledgements wait meanwhile.
//
// PublishStream returns once batches is closed and every event received is
// acknowledged (nil), or after the first failure (refusal, timeout, lost
// connection, ctx ending) once every publish in flight has been
// acknowledged or has failed; it then stops receiving from batches, and the
// sender must stop sending (it knows PublishStream returned). The guarantee
// is PublishBatch's over the concatenation of the batches received: the
// count returned is the acknowledged prefix, the stream holds a prefix of
// the events (perhaps longer than the acknowledged one, after an unknown
// outcome) and never an event after one it refused, because each publish
// names the sequence of the one before it. The caller must not modify a
// batch's events until PublishStream returns.
func (p *Publisher) PublishStream(ctx context.Context, after uint64, batches <-chan []Event, acked func(index int)) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	select {
	case p.busy <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-p.busy }()
	if p.closed.Load() {
		return 0, ErrPublisherClosed
	}

	window := p.cfg.MaxInFlight
	slots := make(chan struct{}, window)
	queue := make(chan pendingAck, window) // never blocks: slots bounds it
	stop := make(chan struct{})
	var sendErr error // set by the sender before it closes queue
	// Once the window is full the sender waits for a chunk of it to free
	// before it sends again, so that it sends bursts (which the connection
	// writes together) instead of one message per acknowledgement.
	chunk := max(window/8, 1)
	go func() {
		defer close(queue)
		i := 0      // index in the whole sequence
		credit := 0 // slots taken and not yet used
		for {
			var batch []Event
			select {
			case <-stop:
				return
			case <-ctx.Done():
				sendErr = fmt.Errorf("nats: publish event %d: %w", i, ctx.Err())
				return
			case b, ok := <-batches:
				if !ok {
					return
				}
				batch = b
			}
			for j := range batch {
				// With no slot left, take a chunk of them: while the window
				// has room that takes no time; when it is full, the sender
				// waits for a chunk of acknowledgements.
				for credit == 0 {
					for credit < chunk {
						select {
						case <-stop:
							return
						case <-ctx.Done():
							sendErr = fmt.Errorf("nats: publish event %d (%s): %w", i, batch[j].ID, ctx.Err())
							return
						case slots <- struct{}{}:
							credit++
						}
					}
				}
				credit--
				msg, err := batch[j].Msg(p.cfg.Partitions)
				if err != nil {
					sendErr = fmt.Errorf("nats: publish event %d: %w", i, err)
					return
				}
				msg.Header[jetstream.ExpectedLastSeqHeader] = []string{strconv.FormatUint(after+uint64(i), 10)}
				sentAt := time.Now()
				fut, err := p.js.PublishMsgAsync(msg, p.pubOpts...)
				if err != nil {
					p.failed.Add(1)
					sendErr = fmt.Errorf("nats: publish event %d (%s): %w", i, batch[j].ID, err)
					return
				}
				queue <- pendingAck{index: i, event: &batch[j], fut: fut, sentAt: sentAt}
				i++
			}
		}
	}()

	var firstErr error
	n := 0
	for pa := range queue {
		ack, err := awaitAck(ctx, pa.fut)
		<-slots
		// A clustered stream checks the duplicate window before the expected
		// sequence: a duplicate stored exactly where this publish names
		// (another publisher of the same events, a leader that just lost its
		// lease, got there first) is stored as asked. Anywhere else the
		// event is stored out of place.
		if err == nil && ack.Sequence != after+uint64(pa.index)+1 {
			err = fmt.Errorf("%w: acknowledged as sequence %d (duplicate %v), want %d",
				ErrUnexpectedSequence, ack.Sequence, ack.Duplicate, after+uint64(pa.index)+1)
		}
		if err != nil {
			if ctx.Err() == nil {
				p.failed.Add(1)
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("nats: publish event %d (%s): %w", pa.index, pa.event.ID, classify(err))
				close(stop)
			}
			continue
		}
		now := time.Now()
		p.lastAck.Store(now.UnixNano())
		p.published.Add(1)
		if firstErr == nil {
			n++
			if p.cfg.OnAck != nil {
				p.cfg.OnAck(AckInfo{Index: pa.index, Event: pa.event, Sequence: ack.Sequence,
					SentAt: pa.sentAt, AckedAt: now})
			}
			if acked != nil {
				acked(pa.index)
			}
		}
	}
	if firstErr == nil {
		firstErr = sendErr
	}
	return n, firstErr
}

func awaitAck(ctx context.Context, fut jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select { // an ack that is already in wins over a cancelled ctx
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	default:
	}
	select {
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// classify makes the server's "wrong last sequence" match
// ErrUnexpectedSequence.
func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %w", ErrUnexpectedSequence, err)
	}
	return err
}

// Last returns the sequence of the stream's last message (0 for a stream
// that never held one; a purge keeps it) and that message's commit position
// (HeaderCommitPosition), "" when it has none or is gone.
func (p *Publisher) Last(ctx context.Context) (seq uint64, position string, err error) {
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return 0, "", fmt.Errorf("nats: stream %s: %w", p.cfg.Stream, err)
	}
	st := s.CachedInfo().State
	if st.LastSeq == 0 || st.Msgs == 0 {
		return st.LastSeq, "", nil
	}
	msg, err := s.GetMsg(ctx, st.LastSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return st.LastSeq, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("nats: stream %s: last message: %w", p.cfg.Stream, err)
	}
	return st.LastSeq, msg.Header.Get(HeaderCommitPosition), nil
}

// MaxPositionWalk bounds how many messages LastPosition reads back.
const MaxPositionWalk = 10_000

// LastPosition returns the sequence and commit position (HeaderCommitPosition)
// of the newest message after sequence after that this publisher's discipline
// appended: it carries a commit position and was stored under the condition
// that the stream's last sequence was the one right before it
// (Nats-Expected-Last-Sequence, which JetStream keeps with the message). It
// walks back from the stream's last message over anything else: a message
// re-published by hand (a copy keeps the original's commit position but
// cannot keep its condition, or the stream would refuse it), or appended by
// another writer. It returns 0 and "" when no message after after is one,
// and an error when more than MaxPositionWalk messages would have to be
// read.
func (p *Publisher) LastPosition(ctx context.Context, after uint64) (seq uint64, position string, err error) {
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return 0, "", fmt.Errorf("nats: stream %s: %w", p.cfg.Stream, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 {
		return 0, "", nil
	}
	lowest := max(after+1, st.FirstSeq)
	for seq := st.LastSeq; seq >= lowest && seq > 0; seq-- {
		if st.LastSeq-seq >= MaxPositionWalk {
			return 0, "", fmt.Errorf("nats: stream %s: none of the last %d messages carries a commit position under "+
				"its expected last sequence; they were appended by another writer", p.cfg.Stream, MaxPositionWalk)
		}
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			return 0, "", fmt.Errorf("nats: stream %s: message %d: %w", p.cfg.Stream, seq, err)
		}
		pos := msg.Header.Get(HeaderCommitPosition)
		if pos != "" && msg.Header.Get(jetstream.ExpectedLastSeqHeader) == strconv.FormatUint(seq-1, 10) {
			return seq, pos, nil
		}
	}
	return 0, "", nil
}

// EventIDs calls fn, in stream order, with the sequence and event id
// (Nats-Msg-Id) of every message stored after sequence after, up to and
// including through. It reads headers only, through an ordered consumer.
func (p *Publisher) EventIDs(ctx context.Context, after, through uint64, fn func(seq uint64, id string) error) error {
	if through <= after {
		return nil
	}
	cons, err := p.js.OrderedConsumer(ctx, p.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   after + 1,
		HeadersOnly:   true,
	})
	if err != nil {
		return fmt.Errorf("nats: read stream %s: %w", p.cfg.Stream, err)
	}
	for {
		batch, err := cons.Fetch(int(min(through-after, 4096)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("nats: read stream %s: %w", p.cfg.Stream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("nats: read stream %s: %w", p.cfg.Stream, err)
			}
			seq := meta.Sequence.Stream
			if seq > through {
				return nil
			}
			if err := fn(seq, msg.Headers().Get(HeaderMsgID)); err != nil {
				return err
			}
			after = seq
			if seq == through || meta.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("nats: read stream %s: %w", p.cfg.Stream, err)
		}
		if n == 0 {
			return fmt.Errorf("nats: read stream %s: no message after sequence %d within 5s", p.cfg.Stream, after)
		}
	}
}

// Flush waits until no PublishBatch is running and every publish this
// Publisher sent has been acknowledged or has failed, including those a
// PublishBatch abandoned when its ctx ended.
func (p *Publisher) Flush(ctx context.Context) error {
	select {
	case p.busy <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.busy }()
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close makes further PublishBatch calls fail with ErrPublisherClosed and
// flushes. It does not close the connection, which the caller owns.
func (p *Publisher) Close(ctx context.Context) error {
	p.closed.Store(true)
	return p.Flush(ctx)
}

// Stats returns a snapshot of the counters.
func (p *Publisher) Stats() PublisherStats {
	s := PublisherStats{Published: p.published.Load(), Failed: p.failed.Load()}
	if ns := p.lastAck.Load(); ns != 0 {
		s.LastAck = time.Unix(0, ns)
	}
	return s
}
