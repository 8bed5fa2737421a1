package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// Headers the runtime adds to a dead-lettered event, beside its original ones.
const (
	HeaderDLQReason     = "Jetcqrs-Dlq-Reason"
	HeaderDLQProjection = "Jetcqrs-Dlq-Projection"
	HeaderDLQStreamSeq  = "Jetcqrs-Dlq-Stream-Seq"
	HeaderDLQSubject    = "Jetcqrs-Dlq-Subject"
	HeaderDLQDeliveries = "Jetcqrs-Dlq-Deliveries"
	// HeaderDLQEventID keeps the event id: Nats-Msg-Id of a dead letter is
	// its own deduplication key in the dead-letter stream.
	HeaderDLQEventID = "Jetcqrs-Dlq-Event-Id"
	priorityGroup    = "jetcqrs"
)

// Projection is one read model fed from the stream.
type Projection struct {
	// Name identifies the projection in consumer names, metrics and the DLQ.
	Name string
	// AggregateTypes are the aggregate types whose events it consumes.
	AggregateTypes []string
	// EventTypes, when set, narrows the consumers to these event types (of
	// AggregateTypes): the server delivers nothing else. Empty: every event
	// of AggregateTypes.
	EventTypes []string
	// Store applies batches.
	Store Applier
	// CommitInterval, when positive, combines the batches the partitions
	// deliver at the same time into one Apply, at most one per interval:
	// for stores whose every write has a high fixed cost (a Bleve segment,
	// a ClickHouse part). An idle store is still written at once. It adds
	// up to the interval to the model's lag under load; zero applies each
	// partition's batch on its own.
	CommitInterval time.Duration
}

// Config configures the runtime. Zero fields take defaults.
type Config struct {
	Stream     string // default EVENTS
	DLQStream  string // default DLQ; subjects dlq.<projection>.<partition>
	Partitions int    // default 16; must match the stream
	// Generation distinguishes consumers of a rebuilt read model (default "g1").
	Generation string
	// BatchSize is the most events applied in one round trip (default 256).
	BatchSize int
	// Linger is how long a worker waits for more events after the first one
	// of a batch arrived (default 1ms): latency when idle, batching under load.
	Linger time.Duration
	// FetchWait bounds one pull request (default 5s).
	FetchWait time.Duration
	// MaxDeliver (default 5): events delivered more often than this (their
	// projectors stopped or died holding them, again and again) are applied
	// one at a time, each acknowledged once applied, so that whatever stops
	// the projector next, the events before it do not wait for it again. An
	// event whose apply panics MaxDeliver times on its own is dead-lettered.
	// Deliveries themselves never dead-letter anything: a projector stopped
	// or restarted during an outage delivers the same events again.
	MaxDeliver int
	// AckWait is how long the server waits for an ack before redelivering
	// (default 10s); a worker retrying a batch extends it. An event whose
	// delivery was lost (a killed process, a pull request gone) holds up
	// its partition that long, since a worker admits only the partition's
	// next event.
	AckWait time.Duration
	// PinnedTTL is how soon another process takes over a partition whose
	// pinned worker stopped pulling (default 5s).
	PinnedTTL time.Duration
	// RetryBackoff bounds the wait between retries of a failing batch
	// (default 2s).
	RetryBackoff time.Duration
	// OnApplied is called after each batch is applied (read-your-writes
	// notifications). It must not block.
	OnApplied func(projection string, events []Envelope)
	// Retired, if set, is asked before a worker re-creates a consumer that
	// went away (deleted, or lost with the server's state); when it reports
	// true, a newer generation of the read model has replaced this one and
	// the worker stops instead.
	Retired func(ctx context.Context) bool
	// StartDelay, if set, is how long a partition's worker waits before its
	// first pull. The first process to pull a partition is pinned to it, so
	// processes that start a runtime at the same moment (a rebuild) and
	// delay each partition differently share the partitions between them.
	StartDelay func(partition int) time.Duration
	Logger     *slog.Logger
	Registry   prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = jnats.DefaultStreamName
	}
	if c.DLQStream == "" {
		c.DLQStream = jnats.DefaultDeadLetterStreamName
	}
	if c.Partitions == 0 {
		c.Partitions = jnats.DefaultPartitions
	}
	if c.Generation == "" {
		c.Generation = "g1"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.Linger == 0 {
		c.Linger = time.Millisecond
	}
	if c.FetchWait == 0 {
		c.FetchWait = 5 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 5
	}
	if c.AckWait == 0 {
		c.AckWait = 10 * time.Second
	}
	if c.PinnedTTL == 0 {
		c.PinnedTTL = 5 * time.Second
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Partitions < 1 || c.Partitions > jnats.MaxPartitions:
		return fmt.Errorf("projections: Partitions %d out of range 1-%d", c.Partitions, jnats.MaxPartitions)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("projections: BatchSize %d out of range 1-10000", c.BatchSize)
	case c.MaxDeliver < 1:
		return fmt.Errorf("projections: MaxDeliver %d must be ≥ 1", c.MaxDeliver)
	case c.Linger < 0 || c.FetchWait < time.Second || c.AckWait < time.Second || c.PinnedTTL < time.Second:
		return errors.New("projections: Linger must be ≥ 0 and FetchWait, AckWait, PinnedTTL ≥ 1s")
	case !validName(c.Generation):
		return fmt.Errorf("projections: Generation %q must be letters, digits, - or _", c.Generation)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Runtime runs one worker per (projection, partition). Each worker pulls from
// a durable consumer whose priority group pins it to one client at a time, so
// with several projector processes exactly one applies a partition and order
// holds; the others stand by and take over PinnedTTL after it stops.
type Runtime struct {
	js          jetstream.JetStream
	cfg         Config
	projections []Projection
	metrics     *runtimeMetrics
	outages     *outages
}

// NewRuntime validates cfg and the projections.
func NewRuntime(js jetstream.JetStream, cfg Config, projections []Projection) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, p := range projections {
		if !validName(p.Name) || seen[p.Name] || len(p.AggregateTypes) == 0 || p.Store == nil {
			return nil, fmt.Errorf("projections: projection %q needs a unique name, aggregate types and a store", p.Name)
		}
		for _, et := range p.EventTypes {
			if agg, ok := domain.AggregateOf(et); !ok || !slices.Contains(p.AggregateTypes, agg) {
				return nil, fmt.Errorf("projections: projection %q: event type %q is not one of its aggregate types' %v", p.Name, et, p.AggregateTypes)
			}
		}
		if p.CommitInterval < 0 || p.CommitInterval > maxCommitInterval {
			return nil, fmt.Errorf("projections: projection %q: CommitInterval %s out of range 0-%s", p.Name, p.CommitInterval, maxCommitInterval)
		}
		seen[p.Name] = true
	}
	cfg = cfg.withDefaults()
	m, err := newRuntimeMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Runtime{js: js, cfg: cfg, projections: projections, metrics: m, outages: newOutages()}, nil
}

// The commit intervals jetcqrs gives its search index and its analytics
// table: both tolerate a short lag and pay for every write (a segment to
// merge, a part to merge).
const (
	CatalogCommitInterval = 250 * time.Millisecond
	SalesCommitInterval   = 250 * time.Millisecond
)

// maxCommitInterval keeps a combined batch well inside the shortest AckWait.
const maxCommitInterval = 250 * time.Millisecond

// ConsumerName is the durable consumer of a projection's partition.
func (r *Runtime) ConsumerName(projection string, partition int) string {
	return ConsumerName(projection, r.cfg.Generation, partition)
}

// ConsumerName is the durable consumer of a partition of one generation of a
// projection.
func ConsumerName(projection, generation string, partition int) string {
	return fmt.Sprintf("proj_%s_%s_p%02d", projection, generation, partition)
}

// EnsureConsumers creates or updates every durable consumer. Idempotent.
func (r *Runtime) EnsureConsumers(ctx context.Context) error {
	_, err := r.ensureAll(ctx)
	return err
}

// ensureAll creates or updates every durable consumer, several requests at
// a time: each is a round trip to the server, which a rebuild's start
// would otherwise wait out one after another. It returns them by
// projection, then partition, nil for those it could not create, with the
// errors of those.
func (r *Runtime) ensureAll(ctx context.Context) ([][]jetstream.Consumer, error) {
	out := make([][]jetstream.Consumer, len(r.projections))
	errs := make([]error, len(r.projections)*r.cfg.Partitions)
	sem := make(chan struct{}, ensureConcurrency)
	var wg sync.WaitGroup
	for i, p := range r.projections {
		out[i] = make([]jetstream.Consumer, r.cfg.Partitions)
		for part := 0; part < r.cfg.Partitions; part++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				out[i][part], errs[i*r.cfg.Partitions+part] = r.ensureConsumer(ctx, p, part)
			}()
		}
	}
	wg.Wait()
	// out holds nil where creating the consumer failed.
	return out, errors.Join(errs...)
}

// ensureConcurrency bounds the consumer requests in flight at once.
const ensureConcurrency = 8

func (r *Runtime) ensureConsumer(ctx context.Context, p Projection, partition int) (jetstream.Consumer, error) {
	cc := jetstream.ConsumerConfig{
		Durable:        r.ConsumerName(p.Name, partition),
		Description:    fmt.Sprintf("projection %s, partition %d", p.Name, partition),
		FilterSubjects: p.filters(partition),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.cfg.AckWait,
		MaxDeliver:     -1, // the worker dead-letters; the server must never drop an event silently
		MaxAckPending:  r.cfg.BatchSize * 4,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{priorityGroup},
		PinnedTTL:      r.cfg.PinnedTTL,
	}
	c, err := r.js.CreateOrUpdateConsumer(ctx, r.cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("projections: consumer %s: %w", cc.Durable, err)
	}
	return c, nil
}

// filters are the subjects of a partition's consumer: one per event type
// when EventTypes narrows it, else one per aggregate type.
func (p Projection) filters(partition int) []string {
	if len(p.EventTypes) == 0 {
		return jnats.PartitionFilters(partition, p.AggregateTypes...)
	}
	out := make([]string, len(p.EventTypes))
	for i, et := range p.EventTypes {
		agg, _ := domain.AggregateOf(et)
		out[i] = jnats.Subject(agg, partition, et)
	}
	return out
}

// Run starts every worker and returns when ctx ends and they have drained
// (finished and acknowledged the batch in hand), or when one fails for good.
func (r *Runtime) Run(ctx context.Context) error {
	// A consumer that cannot be created now (a NATS leader election, a
	// cluster too busy to answer in time) is no reason to stop: its worker
	// creates it and retries until it exists.
	consumers, err := r.ensureAll(ctx)
	if err != nil && ctx.Err() == nil {
		r.cfg.Logger.Warn("projections: consumers not all created yet; the workers retry", "err", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(r.projections)*r.cfg.Partitions)
	for i, p := range r.projections {
		var store Applier = recovering{p.Store}
		if p.CommitInterval > 0 {
			store = newGroupCommit(store, p.CommitInterval, r.cfg.BatchSize*r.cfg.Partitions)
		}
		for part := 0; part < r.cfg.Partitions; part++ {
			c := consumers[i][part]
			w := &worker{rt: r, p: p, store: store, partition: part, consumer: c, created: c != nil,
				log: r.cfg.Logger.With("projection", p.Name, "partition", part)}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.run(ctx); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(ch <-chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

type worker struct {
	rt        *Runtime
	p         Projection
	store     Applier // p.Store, or its group commit
	partition int
	log       *slog.Logger
	consumer  jetstream.Consumer
	created   bool             // the consumer was created once: if it is gone, the generation may be retired
	stream    jetstream.Stream // looked up on the first gap check
	order     order
}

// order is what a worker knows of its partition's applied prefix: the
// server redelivers an event once its own ack wait or nak delay is over, so
// the events a stopped or killed projector held come back in any order, and
// a later event of the partition can arrive before an earlier one that
// waits out its ack wait. See admit.
type order struct {
	// known: every event of the partition up to last is applied or
	// dead-lettered (and acknowledged, or in this worker's hands in order).
	known bool
	last  uint64 // stream sequence
	// When the event at last came with its first delivery, dseq is that
	// delivery's consumer sequence: a first delivery with the next consumer
	// sequence is the partition's next event (the server delivers new events
	// in stream order, and nobody else got a delivery in between).
	fresh bool
	dseq  uint64
}

type delivered struct {
	msg jetstream.Msg
	env Envelope
	md  *jetstream.MsgMetadata
}

func (w *worker) run(ctx context.Context) error {
	if w.rt.cfg.StartDelay != nil {
		sleep(ctx, w.rt.cfg.StartDelay(w.partition))
	}
	for ctx.Err() == nil {
		if w.consumer == nil {
			if w.created && w.rt.cfg.Retired != nil && w.rt.cfg.Retired(ctx) {
				w.log.Info("generation retired; worker stops")
				return nil
			}
			c, err := w.rt.ensureConsumer(ctx, w.p, w.partition)
			if err != nil {
				w.log.Warn("consumer unavailable; retrying", "err", err)
				sleep(ctx, w.rt.cfg.RetryBackoff)
				continue
			}
			w.consumer, w.created = c, true
			w.order = order{} // a re-created consumer counts its deliveries anew
		}
		if err := w.fetch(ctx); err != nil && ctx.Err() == nil {
			if errors.Is(err, jetstream.ErrPinIDMismatch) || errors.Is(err, jetstream.ErrNoHeartbeat) {
				// Another process holds this partition; stand by. What it
				// applies meanwhile is learnt from the consumer's ack floor.
				w.order = order{}
				sleep(ctx, w.rt.cfg.PinnedTTL/5)
				continue
			}
			// Anything else may mean the consumer is gone: deleted during the
			// pull (ErrConsumerDeleted), or before it, when the server answers
			// the pull with "no responders" and the ack with nothing at all.
			// Re-creating it is idempotent, so check it on every failure.
			w.consumer = nil
			w.log.Debug("fetch failed; retrying", "err", err)
			sleep(ctx, 200*time.Millisecond)
		}
	}
	return nil
}

// fetch issues one pull request and applies what it delivers in chunks: the
// first event of a chunk is waited for, then whatever else arrives within
// Linger joins it, up to BatchSize.
func (w *worker) fetch(ctx context.Context) error {
	// The pull request outlives ctx: when ctx ends, the client would drop
	// its subscription while the server may still be delivering to it, and
	// an event lost that way waits out AckWait, holding up its partition
	// (a worker admits only a partition's next event). So a stopping worker
	// stops applying and leaves the pull request to a goroutine that gives
	// back what it still delivers until the server ends it (FetchContext
	// asks the server to end it before the deadline): the worker stops at
	// once, and nothing the server sent is dropped unanswered.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.rt.cfg.FetchWait)
	batch, err := w.consumer.Fetch(w.rt.cfg.BatchSize, jetstream.FetchContext(fctx),
		jetstream.FetchPriorityGroup(priorityGroup))
	if err != nil {
		cancel()
		return err
	}
	msgs := batch.Messages()
	giveBack := func() {
		defer cancel()
		for m := range msgs {
			_ = m.NakWithDelay(giveBackDelay)
		}
	}
	defer func() {
		if ctx.Err() != nil {
			go giveBack()
			return
		}
		giveBack()
	}()
	chunk := make([]jetstream.Msg, 0, w.rt.cfg.BatchSize)
	for {
		chunk = chunk[:0]
		if ctx.Err() != nil {
			return nil
		}
		var first jetstream.Msg
		var ok bool
		select {
		case first, ok = <-msgs:
		case <-ctx.Done():
			return nil
		}
		if !ok {
			if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		}
		chunk = append(chunk, first)
		linger := time.NewTimer(w.rt.cfg.Linger)
	gather:
		for len(chunk) < w.rt.cfg.BatchSize {
			select {
			case m, ok := <-msgs:
				if !ok {
					break gather
				}
				chunk = append(chunk, m)
			case <-linger.C:
				break gather
			}
		}
		linger.Stop()
		admitted, then, err := w.admit(ctx, chunk)
		if err != nil {
			return err
		}
		if len(admitted) == 0 {
			continue
		}
		// The batch in hand is finished even when ctx ends: drain, not drop.
		if err := w.process(context.WithoutCancel(ctx), ctx, admitted); err != nil {
			w.order = order{}
			return err
		}
		w.order = then
	}
}

// admit returns the events of msgs the partition's order allows to apply
// now, in stream order, and the order once they are applied: each must be
// the partition's next event after the last one applied. An event after a
// gap (an earlier event of the partition not yet applied: held by a
// projector that stops, waiting out the ack wait of one that died, or given
// back with a nak delay) is given back with those after it, to come again
// once the gap is filled. Events applied already (a redelivery that crossed
// its ack) are acknowledged and dropped; second copies are dropped.
func (w *worker) admit(ctx context.Context, msgs []jetstream.Msg) ([]jetstream.Msg, order, error) {
	type item struct {
		msg jetstream.Msg
		md  *jetstream.MsgMetadata
	}
	items := make([]item, 0, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return nil, w.order, fmt.Errorf("message metadata: %w", err)
		}
		items = append(items, item{m, md})
	}
	slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(a.md.Sequence.Stream, b.md.Sequence.Stream) })
	giveBack := func(rest []item) {
		for _, it := range rest {
			_ = it.msg.NakWithDelay(giveBackDelay)
		}
	}
	out := make([]jetstream.Msg, 0, len(items))
	o := w.order
	for i, it := range items {
		seq := it.md.Sequence.Stream
		if i > 0 && seq == items[i-1].md.Sequence.Stream {
			continue // a second copy: the first one's ack covers the sequence
		}
		place, err := w.follows(ctx, &o, it.md, len(out) == 0)
		if err != nil {
			giveBack(items[i:])
			return out, o, err
		}
		switch place {
		case isApplied:
			_ = it.msg.Ack()
		case isAfterGap:
			w.log.Debug("an event arrived before an earlier one of its partition; giving it back until that one is applied",
				"seq", seq, "after", o.last, "events", len(items)-i)
			giveBack(items[i:])
			return out, o, nil
		case isNext:
			out = append(out, it.msg)
			o = order{known: true, last: seq, fresh: it.md.NumDelivered == 1, dseq: it.md.Sequence.Consumer}
		}
	}
	return out, o, nil
}

type placement int

const (
	isNext placement = iota
	isApplied
	isAfterGap
)

// follows tells whether the event md describes is the partition's next one
// after o, was applied already, or comes after a gap. It asks the server
// only when the consumer sequences do not tell: for the first event a worker
// sees, and after every redelivery. With rebase, a gap after what the worker
// remembers is checked against the consumer's ack floor, which knows what
// another process applied meanwhile.
func (w *worker) follows(ctx context.Context, o *order, md *jetstream.MsgMetadata, rebase bool) (placement, error) {
	seq := md.Sequence.Stream
	if o.known && seq <= o.last {
		return isApplied, nil
	}
	if o.known && o.fresh && md.NumDelivered == 1 && md.Sequence.Consumer == o.dseq+1 {
		return isNext, nil
	}
	for fromServer := !o.known; ; fromServer = true {
		if fromServer {
			// Everything up to the consumer's ack floor is acknowledged.
			info, err := w.consumer.Info(ctx)
			if err != nil {
				return isAfterGap, fmt.Errorf("consumer info: %w", err)
			}
			*o = order{known: true, last: info.AckFloor.Stream}
			if seq <= o.last {
				return isApplied, nil
			}
		}
		after, err := w.nextAfter(ctx, o.last)
		if err != nil {
			return isAfterGap, err
		}
		if seq <= after {
			return isNext, nil
		}
		if fromServer || !rebase {
			return isAfterGap, nil
		}
	}
}

// nextAfter is the stream sequence of the partition's first event after
// seq (on any of the consumer's subjects), or MaxUint64 when there is none.
func (w *worker) nextAfter(ctx context.Context, seq uint64) (uint64, error) {
	if w.stream == nil {
		s, err := w.rt.js.Stream(ctx, w.rt.cfg.Stream)
		if err != nil {
			return 0, fmt.Errorf("stream: %w", err)
		}
		w.stream = s
	}
	after := uint64(math.MaxUint64)
	for _, subject := range w.p.filters(w.partition) {
		m, err := w.stream.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("next event of %s after %d: %w", subject, seq, err)
		}
		after = min(after, m.Sequence)
	}
	return after, nil
}

// process decodes, applies and acknowledges one chunk. Poison events go to
// the dead-letter stream, and so do events the store rejects (see decide);
// a failing store is retried (the events stay in progress) until it recovers
// or the runtime stops.
func (w *worker) process(ctx, stop context.Context, msgs []jetstream.Msg) error {
	start := time.Now()
	items := make([]delivered, 0, len(msgs))
	// suspect: some event was delivered more than MaxDeliver times, i.e.
	// the projectors that had it stopped or died before acknowledging it,
	// again and again: stopped during an outage, or killed by it.
	suspect := false
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("message metadata: %w", err)
		}
		suspect = suspect || int(md.NumDelivered) > w.rt.cfg.MaxDeliver
		ev, err := jnats.DecodeMsg(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			w.deadLetter(ctx, m, md, err.Error())
			continue
		}
		items = append(items, delivered{msg: m, md: md, env: Envelope{
			Seq: md.Sequence.Stream, ID: ev.ID, AggregateType: ev.AggregateType, AggregateID: ev.AggregateID,
			AggregateVersion: ev.AggregateVersion, EventType: ev.EventType, SchemaVersion: ev.SchemaVersion,
			OccurredAt: ev.OccurredAt, TraceParent: ev.TraceParent, Payload: ev.Payload,
		}})
	}
	// queue holds the events still to apply, in order, as the groups to
	// apply together: the whole chunk, unless the store rejected it, or it
	// is suspect, and it was split into single events to find the culprit.
	queue := [][]delivered{items}
	var acked map[jetstream.Msg]bool // in a suspect chunk, those acknowledged one by one
	if suspect {
		// One at a time, each acknowledged once applied: whatever stops
		// the projector next, nothing before it waits for it again.
		queue, acked = singles(items), map[jetstream.Msg]bool{}
	}
	// attempt and panics count the failed applies of the group at the head
	// of the queue: the runtime's own count, which no restart or hand-back
	// inflates.
	attempt, panics := 0, 0
	advance := func(next [][]delivered) { queue, attempt, panics = next, 0, 0 }
	for len(queue) > 0 {
		group := queue[0]
		if len(group) == 0 {
			advance(queue[1:])
			continue
		}
		envs := make([]Envelope, len(group))
		for i, it := range group {
			envs[i] = it.env
		}
		err := w.store.Apply(ctx, envs)
		if err == nil {
			w.rt.outages.applied(w.p.Name, w.partition)
			w.rt.metrics.observe(w.p.Name, w.partition, envs, time.Since(start))
			if w.rt.cfg.OnApplied != nil {
				w.rt.cfg.OnApplied(w.p.Name, envs)
			}
			if suspect {
				if err := group[0].msg.DoubleAck(ctx); err != nil {
					return fmt.Errorf("ack: %w", err)
				}
				acked[group[0].msg] = true
			}
			advance(queue[1:])
			continue
		}
		var poison *PoisonError
		if errors.As(err, &poison) {
			i := indexOfSeq(group, poison.Seq)
			if i < 0 {
				return fmt.Errorf("projection %s: poison error names seq %d outside the batch: %w", w.p.Name, poison.Seq, err)
			}
			w.deadLetter(ctx, group[i].msg, group[i].md, poison.Reason)
			queue[0] = append(group[:i], group[i+1:]...)
			continue
		}
		f := failure{events: len(group), cause: causeOutage}
		var pe *panicError
		switch {
		case errors.As(err, &pe):
			panics++
			f.cause, f.panics = causePanic, panics
			w.log.Error("applying a batch panicked", "panic", pe.value, "stack", string(pe.stack), "events", len(group))
		case errors.Is(err, ErrRejected):
			f.cause = causeRejected
		}
		switch decide(f, w.rt.cfg.MaxDeliver) {
		case deadLetterIt:
			reason := "rejected by the store: " + err.Error()
			if f.cause == causePanic {
				reason = fmt.Sprintf("applying it panicked %d times: %v", panics, err)
			}
			w.deadLetter(ctx, group[0].msg, group[0].md, reason)
			advance(queue[1:])
			continue
		case oneByOne:
			// One event at a time, so that the failure names its event.
			w.log.Warn("a batch failed for its events; applying them one at a time", "err", err, "events", len(group))
			advance(append(singles(group), queue[1:]...))
			continue
		}
		if f.cause == causeOutage {
			w.rt.outages.failed(w.p.Name, w.partition, err, time.Now())
			w.rt.metrics.storeErrors.WithLabelValues(w.p.Name, StoreReply(err)).Inc()
		}
		w.rt.metrics.retries.WithLabelValues(w.p.Name).Inc()
		w.log.Warn("applying a batch failed; retrying", "err", err, "reply", StoreReply(err), "attempt", attempt+1, "events", len(group))
		for _, g := range queue {
			for _, it := range g {
				_ = it.msg.InProgress()
			}
		}
		if stop.Err() != nil {
			// Give the events back: they are redelivered to whichever worker
			// holds the partition next (or after AckWait if this process
			// dies first). Acks are per event, so nobody's later ack can
			// cover them.
			for _, g := range queue {
				for _, it := range g {
					_ = it.msg.NakWithDelay(giveBackDelay)
				}
			}
			return stop.Err()
		}
		sleep(stop, backoff(attempt, w.rt.cfg.RetryBackoff))
		attempt++
	}
	// Every event is acknowledged on its own (dead-lettered ones included):
	// with AckAll, a standby's ack of a later event would cover events a
	// stopped worker still held, and they would never be applied. The last
	// ack is a double ack: the connection keeps order, so when the server
	// confirms it, the whole chunk's checkpoint is durable.
	var rest []jetstream.Msg
	for _, m := range msgs {
		if !acked[m] {
			rest = append(rest, m)
		}
	}
	if len(rest) == 0 {
		return nil
	}
	for _, m := range rest[:len(rest)-1] {
		if err := m.Ack(); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
	if err := rest[len(rest)-1].DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// singles splits items into groups of one.
func singles(items []delivered) [][]delivered {
	out := make([][]delivered, len(items))
	for i := range items {
		out[i] = items[i : i+1 : i+1]
	}
	return out
}

// giveBackDelay holds back the redelivery of events a stopping worker gives
// back until its own pull request is gone: the server delivers to a pull
// request as long as its reply subject has a subscriber, and a Nak sent
// before the unsubscribe would hand the events straight back to the worker
// that is leaving, where they would wait out AckWait.
const giveBackDelay = 500 * time.Millisecond

func indexOfSeq(items []delivered, seq uint64) int {
	for i, it := range items {
		if it.env.Seq == seq {
			return i
		}
	}
	return -1
}

// deadLetter publishes m with its original headers and the reason to
// dlq.<projection>.<partition>, deduplicated by stream sequence, and retries
// until the dead-letter stream has it: an event is never dropped silently.
func (w *worker) deadLetter(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata, reason string) {
	out := natsgo.NewMsg(fmt.Sprintf("dlq.%s.%d", w.p.Name, w.partition))
	for k, v := range m.Headers() {
		// The relay's publish conditions (Nats-Expected-Last-Sequence, …)
		// are stored with the event; copied, they would hold the dead
		// letter to the event stream's sequence.
		if strings.HasPrefix(k, "Nats-Expected-") {
			continue
		}
		out.Header[k] = append([]string(nil), v...)
	}
	seq := strconv.FormatUint(md.Sequence.Stream, 10)
	out.Header.Set(HeaderDLQEventID, m.Headers().Get(natsgo.MsgIdHdr))
	out.Header.Set(natsgo.MsgIdHdr, w.p.Name+"-"+w.rt.cfg.Generation+"-"+seq)
	out.Header.Set(HeaderDLQReason, reason)
	out.Header.Set(HeaderDLQProjection, w.p.Name)
	out.Header.Set(HeaderDLQStreamSeq, seq)
	out.Header.Set(HeaderDLQSubject, m.Subject())
	out.Header.Set(HeaderDLQDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	out.Data = m.Data()
	for attempt := 0; ; attempt++ {
		_, err := w.rt.js.PublishMsg(ctx, out, jetstream.WithExpectStream(w.rt.cfg.DLQStream))
		if err == nil {
			break
		}
		w.log.Warn("dead-lettering failed; retrying", "seq", seq, "err", err)
		_ = m.InProgress()
		sleep(ctx, backoff(attempt, w.rt.cfg.RetryBackoff))
	}
	w.rt.metrics.deadLetters.WithLabelValues(w.p.Name).Inc()
	w.log.Warn("event dead-lettered", "seq", seq, "subject", m.Subject(), "reason", reason)
}

func backoff(attempt int, max time.Duration) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 10)
	return min(d, max)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type runtimeMetrics struct {
	applied     *prometheus.CounterVec
	lastSeq     *prometheus.GaugeVec
	lag         *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	storeErrors *prometheus.CounterVec
}

func newRuntimeMetrics(reg prometheus.Registerer) (*runtimeMetrics, error) {
	m := &runtimeMetrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetcqrs_projection_events_applied_total",
			Help: "Events applied to a read model."}, []string{"projection"}),
		lastSeq: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetcqrs_projection_last_seq",
			Help: "Stream sequence of the last event applied, per partition."}, []string{"projection", "partition"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jetcqrs_projection_lag_seconds",
			Help:    "Time from the event's commit (occurred_at) to its application in the read model.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"projection"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetcqrs_projection_batch_retries_total",
			Help: "Batches retried after a store error."}, []string{"projection"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetcqrs_projection_dead_letters_total",
			Help: "Events sent to the dead-letter stream."}, []string{"projection"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetcqrs_projection_store_errors_total",
			Help: "Failed applies the runtime waits out (store outages), by the store's reply: a Redis error code " +
				"(MISCONF, NOAUTH, LOADING…), an Elasticsearch error type, a ClickHouse exception name, or " +
				"timeout, network, error."}, []string{"projection", "reply"}),
	}
	if reg == nil {
		return m, nil
	}
	// Runtimes that share a registry (one per read-model generation) share
	// its collectors.
	var err error
	if m.applied, err = register(reg, m.applied); err != nil {
		return nil, err
	}
	if m.lastSeq, err = register(reg, m.lastSeq); err != nil {
		return nil, err
	}
	if m.lag, err = register(reg, m.lag); err != nil {
		return nil, err
	}
	if m.retries, err = register(reg, m.retries); err != nil {
		return nil, err
	}
	if m.deadLetters, err = register(reg, m.deadLetters); err != nil {
		return nil, err
	}
	if m.storeErrors, err = register(reg, m.storeErrors); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered in its
// place.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

func (m *runtimeMetrics) observe(projection string, partition int, envs []Envelope, _ time.Duration) {
	now := time.Now()
	m.applied.WithLabelValues(projection).Add(float64(len(envs)))
	m.lastSeq.WithLabelValues(projection, strconv.Itoa(partition)).Set(float64(envs[len(envs)-1].Seq))
	h := m.lag.WithLabelValues(projection)
	for _, e := range envs {
		h.Observe(now.Sub(e.OccurredAt).Seconds())
	}
}

// Status is one projection's state for GET /v1/admin/projections.
type Status struct {
	Name       string `json:"name"`
	Generation string `json:"generation"`
	// State is "live" when nothing is pending, "catching_up" otherwise.
	State string `json:"state"`
	// LastSeq is the highest stream sequence acknowledged on any partition.
	LastSeq uint64 `json:"last_seq"`
	// Pending counts events not yet applied (waiting or in flight).
	Pending uint64 `json:"pending"`
	// LagMS is how long the oldest event not yet applied has been in the
	// stream (stored at about its commit, plus the relay's latency); 0 when
	// nothing is pending.
	LagMS int64 `json:"lag_ms"`
	// DeadLetters counts this projection's events in the dead-letter stream.
	DeadLetters uint64 `json:"dead_letters"`
	// Outage is set while the store fails to apply events (see
	// Runtime.Outages).
	Outage *Outage `json:"outage,omitempty"`
}

// Status reports every projection, from its consumers and the dead-letter
// stream.
func (r *Runtime) Status(ctx context.Context) ([]Status, error) {
	out := make([]Status, 0, len(r.projections))
	dlq, err := r.js.Stream(ctx, r.cfg.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("projections: dead-letter stream: %w", err)
	}
	events, err := r.js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("projections: stream: %w", err)
	}
	for _, p := range r.projections {
		st := Status{Name: p.Name, Generation: r.cfg.Generation, Outage: r.outages.of(p.Name)}
		var oldest time.Time // stored time of the oldest event not yet applied
		for part := 0; part < r.cfg.Partitions; part++ {
			c, err := r.js.Consumer(ctx, r.cfg.Stream, r.ConsumerName(p.Name, part))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				st.State = "starting" // being (re)created by its worker
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("projections: consumer %s: %w", r.ConsumerName(p.Name, part), err)
			}
			info := c.CachedInfo()
			if fresh, err := c.Info(ctx); err == nil {
				info = fresh
			}
			st.LastSeq = max(st.LastSeq, info.AckFloor.Stream)
			pending := info.NumPending + uint64(info.NumAckPending)
			st.Pending += pending
			if pending == 0 {
				continue
			}
			// The next event past the ack floor on any of the consumer's
			// subjects is the oldest one this partition has not applied.
			for _, subject := range info.Config.FilterSubjects {
				m, err := events.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(subject))
				if err == nil && (oldest.IsZero() || m.Time.Before(oldest)) {
					oldest = m.Time
				}
			}
		}
		si, err := dlq.Info(ctx, jetstream.WithSubjectFilter("dlq."+p.Name+".>"))
		if err != nil {
			return nil, fmt.Errorf("projections: dead-letter stream: %w", err)
		}
		for _, n := range si.State.Subjects {
			st.DeadLetters += n
		}
		if st.State == "" {
			st.State = "live"
		}
		if st.Pending > 0 {
			st.State = "catching_up"
			if !oldest.IsZero() {
				st.LagMS = max(time.Since(oldest).Milliseconds(), 0)
			}
		}
		out = append(out, st)
	}
	return out, nil
}
