package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	// acknowledged prefix, in order, on the goroutine running PublishBatch,
	// before PublishBatch returns. It must not block. The relay uses it to
	// measure commit-to-ack latency.
	OnAck func(AckInfo)
}

func (c PublisherConfig) withDefaults() PublisherConfig {
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
	Index     int    // position in the batch passed to PublishBatch
	Event     *Event // the batch's element; do not retain or modify
	Sequence  uint64 // stream sequence (of the original message, for a duplicate)
	Duplicate bool   // the stream already held this event id
	SentAt    time.Time
	AckedAt   time.Time
}

// PublisherStats are cumulative counters since NewPublisher.
type PublisherStats struct {
	Published  uint64    // acks for events newly stored
	Duplicates uint64    // acks for events the stream already held (dropped by Nats-Msg-Id)
	Failed     uint64    // publishes that failed or timed out
	Reordered  uint64    // events stored after an earlier event of the same partition was rejected; see PublishBatch
	LastAck    time.Time // zero before the first ack
}

// Publisher publishes batches of events to JetStream in order, pipelined:
// up to MaxInFlight asynchronous publishes are outstanding at once.
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

	published, duplicates, failed, reordered atomic.Uint64
	lastAck                                  atomic.Int64 // unix nanoseconds
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
		},
		busy: make(chan struct{}, 1),
	}, nil
}

type pendingAck struct {
	index  int
	fut    jetstream.PubAckFuture
	sentAt time.Time
}

// PublishBatch publishes events in slice order with Nats-Msg-Id = event id,
// keeping at most MaxInFlight unacknowledged, and waits until every
// published event is acknowledged or has failed.
//
// Guarantee: acked is the length of the longest prefix events[:acked] whose
// every event the stream has acknowledged as stored (an ack saying
// Duplicate counts: the event was already stored). Those events are durable
// in the stream in slice order and the caller may confirm its position up to
// them. err is the first failure in slice order (nil when acked ==
// len(events)); an ack for a later event does not extend the prefix. The
// caller retries events[acked:]; events of that suffix that did reach the
// stream are dropped as duplicates if retried within the stream's duplicate
// window. Sending stops as soon as the first failure is seen.
//
// A failure that leaves the outcome unknown (disconnect, ack timeout) keeps
// the stream in slice order: on one connection the server stores messages
// in the order sent, so anything after a lost message is lost too. Only a
// definite rejection of an event (a stream error, no stream responding)
// followed by acceptance of a later event already in flight can store
// events out of slice order; Stats().Reordered counts such later events
// that share the rejected event's partition and an error is logged.
//
// An event that fails Event.Msg's validation stops the batch there with an
// error matching ErrMalformedEvent; retrying it cannot succeed. If ctx ends,
// PublishBatch returns promptly with ctx's error and the prefix acked so far.
func (p *Publisher) PublishBatch(ctx context.Context, events []Event) (acked int, err error) {
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
	if len(events) == 0 {
		return 0, nil
	}

	window := min(p.cfg.MaxInFlight, len(events))
	slots := make(chan struct{}, window)
	queue := make(chan pendingAck, window) // never blocks: slots bounds it
	stop := make(chan struct{})
	var sendErr error // set by the sender before it closes queue
	go func() {
		defer close(queue)
		for i := range events {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				sendErr = fmt.Errorf("nats: publish event %d (%s): %w", i, events[i].ID, ctx.Err())
				return
			case slots <- struct{}{}:
			}
			msg, err := events[i].Msg(p.cfg.Partitions)
			if err != nil {
				sendErr = fmt.Errorf("nats: publish event %d: %w", i, err)
				return
			}
			sentAt := time.Now()
			fut, err := p.js.PublishMsgAsync(msg, p.pubOpts...)
			if err != nil {
				p.failed.Add(1)
				sendErr = fmt.Errorf("nats: publish event %d (%s): %w", i, events[i].ID, err)
				return
			}
			queue <- pendingAck{index: i, fut: fut, sentAt: sentAt}
		}
	}()

	var firstErr error
	rejectedPartition := "" // partition of the first failure, if the server definitely rejected it
	for pa := range queue {
		ack, err := awaitAck(ctx, pa.fut)
		<-slots
		if err != nil {
			if ctx.Err() == nil {
				p.failed.Add(1)
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("nats: publish event %d (%s): %w", pa.index, events[pa.index].ID, err)
				close(stop)
				if isRejection(err) {
					rejectedPartition = partitionOfSubject(pa.fut.Msg().Subject)
				}
			}
			continue
		}
		now := time.Now()
		p.lastAck.Store(now.UnixNano())
		if ack.Duplicate {
			p.duplicates.Add(1)
		} else {
			p.published.Add(1)
		}
		switch {
		case firstErr == nil:
			acked++
			if p.cfg.OnAck != nil {
				p.cfg.OnAck(AckInfo{Index: pa.index, Event: &events[pa.index], Sequence: ack.Sequence,
					Duplicate: ack.Duplicate, SentAt: pa.sentAt, AckedAt: now})
			}
		case rejectedPartition != "" && !ack.Duplicate && partitionOfSubject(pa.fut.Msg().Subject) == rejectedPartition:
			p.reordered.Add(1)
			p.logger.Error("event stored after an earlier event of its partition was rejected; "+
				"this partition's stream order no longer matches commit order once the rejected event is retried",
				"event_id", events[pa.index].ID, "subject", pa.fut.Msg().Subject, "stream_seq", ack.Sequence,
				"rejection", firstErr)
		}
	}
	if firstErr == nil {
		firstErr = sendErr
	}
	return acked, firstErr
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

// isRejection reports whether err means the server did not store the
// message, as opposed to an unknown outcome (disconnect, timeout).
func isRejection(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// partitionOfSubject strips the event type: events.order.3.X -> events.order.3.
func partitionOfSubject(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[:i]
	}
	return subject
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
	s := PublisherStats{
		Published:  p.published.Load(),
		Duplicates: p.duplicates.Load(),
		Failed:     p.failed.Load(),
		Reordered:  p.reordered.Load(),
	}
	if ns := p.lastAck.Load(); ns != 0 {
		s.LastAck = time.Unix(0, ns)
	}
	return s
}
