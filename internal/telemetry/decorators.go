package telemetry

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetcqrs/jetcqrs/commandapi"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/relay"
)

// Instrumentation scope names.
const (
	ScopeHTTP       = "jetcqrs/http"
	ScopeCommandAPI = "jetcqrs/commandapi"
	ScopePostgres   = "jetcqrs/postgres"
	ScopeRelay      = "jetcqrs/relay"
	ScopeProjection = "jetcqrs/projections"
	ScopeQueryAPI   = "jetcqrs/queryapi"
)

// Span attributes of the event a span publishes or applies.
const (
	AttrEventID          = attribute.Key("jetcqrs.event.id")
	AttrEventType        = attribute.Key("jetcqrs.event.type")
	AttrAggregateType    = attribute.Key("jetcqrs.aggregate.type")
	AttrAggregateID      = attribute.Key("jetcqrs.aggregate.id")
	AttrAggregateVersion = attribute.Key("jetcqrs.aggregate.version")
	AttrStreamSeq        = attribute.Key("jetcqrs.stream.sequence")
	AttrProjection       = attribute.Key("jetcqrs.projection")
	AttrBatchSize        = attribute.Key("jetcqrs.batch.size")
)

func fail(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// Commands decorates the write store so that each command's transaction is
// a client span, child of the command's span. With tracing off it returns
// cmds itself.
func (t *Tracing) Commands(cmds commandapi.Commands) commandapi.Commands {
	if !t.Enabled() {
		return cmds
	}
	return tracedCommands{next: cmds, tracer: t.Tracer(ScopePostgres)}
}

type tracedCommands struct {
	next   commandapi.Commands
	tracer trace.Tracer
}

var _ commandapi.Commands = tracedCommands{}

func (c tracedCommands) tx(ctx context.Context, op string, run func(context.Context) (domain.CommandResult, error)) (domain.CommandResult, error) {
	ctx, span := c.tracer.Start(ctx, "postgres transaction "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", "postgresql"), attribute.String("db.operation.name", op)))
	defer span.End()
	res, err := run(ctx)
	if err != nil {
		fail(span, err)
	} else {
		span.SetAttributes(AttrAggregateID.String(res.AggregateID), AttrAggregateVersion.Int64(res.Version))
	}
	return res, err
}

func (c tracedCommands) CreateProduct(ctx context.Context, meta domain.CommandMeta, cmd domain.CreateProduct) (domain.CommandResult, error) {
	return c.tx(ctx, "create_product", func(ctx context.Context) (domain.CommandResult, error) {
		return c.next.CreateProduct(ctx, meta, cmd)
	})
}

func (c tracedCommands) UpdateProduct(ctx context.Context, meta domain.CommandMeta, sku string, upd domain.UpdateProduct) (domain.CommandResult, error) {
	return c.tx(ctx, "update_product", func(ctx context.Context) (domain.CommandResult, error) {
		return c.next.UpdateProduct(ctx, meta, sku, upd)
	})
}

func (c tracedCommands) AdjustInventory(ctx context.Context, meta domain.CommandMeta, sku string, delta int64, reason string) (domain.CommandResult, error) {
	return c.tx(ctx, "adjust_inventory", func(ctx context.Context) (domain.CommandResult, error) {
		return c.next.AdjustInventory(ctx, meta, sku, delta, reason)
	})
}

func (c tracedCommands) PlaceOrder(ctx context.Context, meta domain.CommandMeta, cmd domain.PlaceOrder) (domain.CommandResult, error) {
	return c.tx(ctx, "place_order", func(ctx context.Context) (domain.CommandResult, error) {
		return c.next.PlaceOrder(ctx, meta, cmd)
	})
}

func (c tracedCommands) TransitionOrder(ctx context.Context, meta domain.CommandMeta, orderID string, tr domain.OrderTransition, reason string) (domain.CommandResult, error) {
	return c.tx(ctx, string(tr)+"_order", func(ctx context.Context) (domain.CommandResult, error) {
		return c.next.TransitionOrder(ctx, meta, orderID, tr, reason)
	})
}

// Publisher decorates the relay's publisher so that publishing an event is a
// producer span, child of the traceparent the event carries from its
// command; an event without one is published untraced. The span lasts until
// the stream acknowledged the event, or the batch failed. With tracing off
// it returns pub itself.
func (t *Tracing) Publisher(pub relay.Publisher) relay.Publisher {
	if !t.Enabled() {
		return pub
	}
	return tracedPublisher{Publisher: pub, tracer: t.Tracer(ScopeRelay)}
}

type tracedPublisher struct {
	relay.Publisher
	tracer trace.Tracer
}

func (p tracedPublisher) PublishBatch(ctx context.Context, after uint64, events []relay.Event) (int, error) {
	spans := make([]trace.Span, len(events))
	for i, e := range events {
		spans[i] = p.start(ctx, e, after+uint64(i)+1)
	}
	acked, err := p.Publisher.PublishBatch(ctx, after, events)
	for i, span := range spans {
		if span == nil {
			continue
		}
		if i >= acked && err != nil {
			fail(span, err)
		}
		span.End()
	}
	return acked, err
}

// PublishStream traces each event as PublishBatch does: its span starts when
// its batch is handed on to the publisher and ends when the stream
// acknowledged it, or with the error that ended the stream.
func (p tracedPublisher) PublishStream(ctx context.Context, after uint64, batches <-chan []relay.Event, acked func()) (int, error) {
	var (
		mu      sync.Mutex
		pending []trace.Span // started and not yet acknowledged, in sequence order
		next    = after      // stream sequence of the next event handed on
	)
	out := make(chan []relay.Event)
	done := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		defer close(out)
		for {
			var batch []relay.Event
			select {
			case <-done:
				return
			case b, ok := <-batches:
				if !ok {
					return
				}
				batch = b
			}
			spans := make([]trace.Span, len(batch))
			for i, e := range batch {
				spans[i] = p.start(ctx, e, next+uint64(i)+1)
			}
			mu.Lock()
			pending = append(pending, spans...)
			next += uint64(len(batch))
			mu.Unlock()
			select {
			case out <- batch:
			case <-done:
				return
			}
		}
	}()
	n, err := p.Publisher.PublishStream(ctx, after, out, func() {
		mu.Lock()
		span := pending[0]
		pending = pending[1:]
		mu.Unlock()
		if span != nil {
			span.End()
		}
		acked()
	})
	close(done)
	<-forwarded
	for _, span := range pending {
		if span == nil {
			continue
		}
		if err != nil {
			fail(span, err)
		}
		span.End()
	}
	return n, err
}

// start begins the producer span of e, published as stream sequence seq;
// nil for an event without a traceparent.
func (p tracedPublisher) start(ctx context.Context, e relay.Event, seq uint64) trace.Span {
	if e.TraceParent == "" {
		return nil
	}
	_, span := p.tracer.Start(Extract(ctx, e.TraceParent), "publish "+e.EventType,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			AttrEventID.String(e.ID), AttrEventType.String(e.EventType),
			AttrAggregateType.String(e.AggregateType), AttrAggregateID.String(e.AggregateID),
			AttrAggregateVersion.Int64(e.AggregateVersion),
			AttrStreamSeq.Int64(int64(seq))))
	return span
}

// Applier decorates a projection's store: each batch is a span linked to
// its events' traces, and applying each event is a consumer span, child of
// the traceparent the event carries, so that the command's trace shows every
// read model that applied it. With tracing off it returns a itself.
func (t *Tracing) Applier(projection string, a projections.Applier) projections.Applier {
	if !t.Enabled() {
		return a
	}
	return tracedApplier{next: a, projection: projection, tracer: t.Tracer(ScopeProjection)}
}

type tracedApplier struct {
	next       projections.Applier
	projection string
	tracer     trace.Tracer
}

func (a tracedApplier) Apply(ctx context.Context, events []projections.Envelope) error {
	parents := make([]trace.SpanContext, len(events))
	links := make([]trace.Link, 0, len(events))
	for i, e := range events {
		if parents[i] = SpanContextOf(e.TraceParent); parents[i].IsValid() {
			links = append(links, trace.Link{SpanContext: parents[i]})
		}
	}
	bctx, batch := a.tracer.Start(ctx, "apply batch "+a.projection, trace.WithNewRoot(), trace.WithLinks(links...),
		trace.WithAttributes(AttrProjection.String(a.projection), AttrBatchSize.Int(len(events))))
	batchLink := trace.Link{SpanContext: batch.SpanContext()}
	spans := make([]trace.Span, len(events))
	for i, e := range events {
		if !parents[i].IsValid() {
			continue
		}
		_, spans[i] = a.tracer.Start(trace.ContextWithRemoteSpanContext(ctx, parents[i]), "apply "+a.projection+" "+e.EventType,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(batchLink), trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.operation.type", "process"),
				AttrProjection.String(a.projection), AttrStreamSeq.Int64(int64(e.Seq)),
				AttrEventID.String(e.ID), AttrEventType.String(e.EventType),
				AttrAggregateType.String(e.AggregateType), AttrAggregateID.String(e.AggregateID),
				AttrAggregateVersion.Int64(e.AggregateVersion)))
	}
	err := a.next.Apply(bctx, events)
	if err != nil {
		fail(batch, err)
	}
	for _, span := range spans {
		if span == nil {
			continue
		}
		if err != nil {
			fail(span, err)
		}
		span.End()
	}
	batch.End()
	return err
}
