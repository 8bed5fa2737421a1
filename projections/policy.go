package projections

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
)

// cause is why the store failed to apply a group of events.
type cause int

const (
	// causeOutage: a state of the store (down, overloaded, misconfigured,
	// refusing writes for now), whatever events it was given.
	causeOutage cause = iota
	// causeRejected: the store refused the events for what they are
	// (ErrRejected).
	causeRejected
	// causePanic: applying the events panicked.
	causePanic
)

// failure is what a worker knows of a group of events that the store has
// just failed to apply.
type failure struct {
	events int   // in the group
	cause  cause // of this failure
	// panics counts the applies of this group that panicked, in a row,
	// in this worker: the runtime's own count, not JetStream's deliveries,
	// which restarts and hand-backs raise as well.
	panics int
}

// verdict is what the worker does next with the group.
type verdict int

const (
	// retryLater applies the same group again after a backoff, for as long
	// as it takes.
	retryLater verdict = iota
	// oneByOne applies the group's events one at a time, so that a failure
	// names its event.
	oneByOne
	// deadLetterIt dead-letters the group's only event and moves on.
	deadLetterIt
)

// decide is the retry-or-dead-letter policy. An outage is waited out, however
// long and however often the projector restarts meanwhile: only the events
// themselves are ever dead-lettered. A group that fails for its events is
// split into single events; a single event is dead-lettered once the store
// rejected it, or once its apply panicked maxPanics times.
func decide(f failure, maxPanics int) verdict {
	switch {
	case f.cause == causeOutage:
		return retryLater
	case f.events > 1:
		return oneByOne
	case f.cause == causeRejected || f.panics >= maxPanics:
		return deadLetterIt
	}
	return retryLater
}

// panicError is an Apply that panicked.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("apply panicked: %v", e.value) }

// recovering turns a panic of its store's Apply into a *panicError, so that
// an event the store's code cannot handle costs a dead letter, not the
// projector process, and a group commit's other callers get their outcome.
type recovering struct{ store Applier }

func (r recovering) Apply(ctx context.Context, events []Envelope) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return r.store.Apply(ctx, events)
}

// eventsFault reports a failure that names the events of the batch rather
// than the store: a group commit applies each caller's batch again on its own.
func eventsFault(err error) bool {
	var poison *PoisonError
	var pe *panicError
	return errors.As(err, &poison) || errors.Is(err, ErrRejected) || errors.As(err, &pe)
}
