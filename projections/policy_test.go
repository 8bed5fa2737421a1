package projections

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	const maxPanics = 5
	for _, tc := range []struct {
		name string
		f    failure
		want verdict
	}{
		{"an outage of a chunk is waited out", failure{events: 200, cause: causeOutage}, retryLater},
		{"an outage of one event is waited out", failure{events: 1, cause: causeOutage}, retryLater},
		{"a rejected chunk is split", failure{events: 2, cause: causeRejected}, oneByOne},
		{"a rejected event is dead-lettered", failure{events: 1, cause: causeRejected}, deadLetterIt},
		{"a chunk that panicked is split", failure{events: 3, cause: causePanic, panics: 1}, oneByOne},
		{"an event that panicked once is tried again", failure{events: 1, cause: causePanic, panics: 1}, retryLater},
		{"an event that panicked almost enough is tried again", failure{events: 1, cause: causePanic, panics: maxPanics - 1}, retryLater},
		{"an event that panicked maxPanics times is dead-lettered", failure{events: 1, cause: causePanic, panics: maxPanics}, deadLetterIt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := decide(tc.f, maxPanics); got != tc.want {
				t.Errorf("decide(%+v) = %d, want %d", tc.f, got, tc.want)
			}
		})
	}
}

type panicking struct{}

func (panicking) Apply(context.Context, []Envelope) error { panic("index out of range") }

func TestRecoveringTurnsAPanicIntoAnEventsFault(t *testing.T) {
	t.Parallel()
	err := recovering{panicking{}}.Apply(t.Context(), []Envelope{{Seq: 1}})
	var pe *panicError
	if !errors.As(err, &pe) || pe.value != "index out of range" || len(pe.stack) == 0 {
		t.Fatalf("Apply = %v, want a *panicError with the value and a stack", err)
	}
	if !eventsFault(err) || eventsFault(errors.New("connection refused")) {
		t.Errorf("eventsFault: a panic is the events' fault, a network error is not")
	}
}

func TestStoreReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("evalsha: %w", WithReply("MISCONF", errors.New("MISCONF Redis is configured to save RDB snapshots"))), "MISCONF"},
		{WithReply("ERR_max {number}\n of clients", errors.New("x")), "ERR_maxnumberofclients"},
		{fmt.Errorf("apply: %w", context.DeadlineExceeded), "timeout"},
		{errors.New("something"), "error"},
	} {
		if got := StoreReply(tc.err); got != tc.want {
			t.Errorf("StoreReply(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestOutagesLastWhileAnyPartitionWaits(t *testing.T) {
	t.Parallel()
	o := newOutages()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o.failed("orders", 0, WithReply("CLUSTERDOWN", errors.New("CLUSTERDOWN The cluster is down")), t0)
	o.failed("orders", 1, WithReply("MISCONF", errors.New("MISCONF no disk")), t0.Add(time.Second))
	o.failed("orders", 1, WithReply("MISCONF", errors.New("MISCONF no disk")), t0.Add(2*time.Second))
	o.applied("orders", 0)
	got := o.of("orders")
	if got == nil || got.Since != t0.Add(time.Second) || got.Reply != "MISCONF" || got.Failures != 2 {
		t.Fatalf("after partition 0 applied: %+v, want partition 1's outage since t0+1s, MISCONF, 2 failures", got)
	}
	o.failed("orders", 0, errors.New("dial tcp: connection refused"), t0.Add(3*time.Second))
	if got := o.of("orders"); got.Since != t0.Add(time.Second) || got.Reply != "error" || got.Failures != 3 {
		t.Fatalf("both partitions failing: %+v", got)
	}
	o.applied("orders", 0)
	o.applied("orders", 1)
	if got := o.of("orders"); got != nil || o.of("inventory") != nil {
		t.Fatalf("after both applied: %+v", got)
	}
}
