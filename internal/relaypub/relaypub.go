// Package relaypub connects the relay's publishing port to the NATS adapter;
// it is the one place where the two meet, so neither imports the other.
package relaypub

import (
	"context"
	"errors"
	"fmt"

	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/relay"
)

// Publisher implements relay.Publisher with a nats.Publisher.
type Publisher struct{ pub *jnats.Publisher }

var _ relay.Publisher = Publisher{}

// New adapts pub.
func New(pub *jnats.Publisher) Publisher { return Publisher{pub: pub} }

// Last returns the stream's last sequence and its message's commit position.
func (p Publisher) Last(ctx context.Context) (uint64, string, error) { return p.pub.Last(ctx) }

// EventIDs reads the event ids of the stream's messages after after, up to
// through.
func (p Publisher) EventIDs(ctx context.Context, after, through uint64, fn func(seq uint64, id string) error) error {
	return p.pub.EventIDs(ctx, after, through, fn)
}

// PublishBatch converts the outbox rows to stream events and appends them
// in order after sequence after. An event the stream's envelope contract
// refuses is reported as relay.ErrEventRejected, so the relay stops instead
// of retrying it forever.
func (p Publisher) PublishBatch(ctx context.Context, after uint64, events []relay.Event) (int, error) {
	out := make([]jnats.Event, len(events))
	for i, e := range events {
		out[i] = jnats.Event{ID: e.ID, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
			AggregateVersion: e.AggregateVersion, EventType: e.EventType, SchemaVersion: e.SchemaVersion,
			OccurredAt: e.OccurredAt, TraceParent: e.TraceParent, CommitPosition: e.Position(), Payload: e.Payload}
	}
	acked, err := p.pub.PublishBatch(ctx, after, out)
	if errors.Is(err, jnats.ErrMalformedEvent) {
		err = fmt.Errorf("%w: %w", relay.ErrEventRejected, err)
	}
	return acked, err
}
