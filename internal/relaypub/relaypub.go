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

// LastPosition returns the newest message after after that the relay
// appended with a commit position (nats.Publisher.LastPosition).
func (p Publisher) LastPosition(ctx context.Context, after uint64) (uint64, string, error) {
	return p.pub.LastPosition(ctx, after)
}

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
	acked, err := p.pub.PublishBatch(ctx, after, convert(events))
	return acked, rejected(err)
}

// PublishStream converts and appends the batches received from batches,
// pipelined, after sequence after (nats.Publisher.PublishStream).
func (p Publisher) PublishStream(ctx context.Context, after uint64, batches <-chan []relay.Event, acked func()) (int, error) {
	out := make(chan []jnats.Event, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(out)
		for {
			select {
			case b, ok := <-batches:
				if !ok {
					return
				}
				select {
				case out <- convert(b):
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	var onAck func(int)
	if acked != nil {
		onAck = func(int) { acked() }
	}
	n, err := p.pub.PublishStream(ctx, after, out, onAck)
	return n, rejected(err)
}

func convert(events []relay.Event) []jnats.Event {
	out := make([]jnats.Event, len(events))
	for i, e := range events {
		out[i] = jnats.Event{ID: e.ID, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
			AggregateVersion: e.AggregateVersion, EventType: e.EventType, SchemaVersion: e.SchemaVersion,
			OccurredAt: e.OccurredAt, TraceParent: e.TraceParent, CommitPosition: e.Position(), Payload: e.Payload}
	}
	return out
}

// rejected marks an event the stream's envelope contract refuses as
// relay.ErrEventRejected, so the relay stops instead of retrying it forever.
func rejected(err error) error {
	if errors.Is(err, jnats.ErrMalformedEvent) {
		return fmt.Errorf("%w: %w", relay.ErrEventRejected, err)
	}
	return err
}
