package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordingStore records each Apply's sequences. An event with a sequence in
// poison makes Apply fail with a PoisonError naming it (after applying the
// events before it); gate, when set, holds every Apply until it is closed.
type recordingStore struct {
	mu      sync.Mutex
	calls   [][]uint64
	applied map[uint64]int
	poison  map[uint64]bool
	reject  bool // fail with ErrRejected instead of a PoisonError
	gate    chan struct{}
	started chan struct{} // receives when an Apply begins, if set
}

func (s *recordingStore) Apply(ctx context.Context, events []Envelope) error {
	if s.started != nil {
		s.started <- struct{}{}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs := make([]uint64, len(events))
	for i, e := range events {
		seqs[i] = e.Seq
	}
	s.calls = append(s.calls, seqs)
	for _, e := range events {
		if s.poison[e.Seq] && s.reject {
			return fmt.Errorf("seq %d: %w", e.Seq, ErrRejected)
		}
		if s.poison[e.Seq] {
			return &PoisonError{Seq: e.Seq, Reason: fmt.Sprintf("seq %d is poison", e.Seq)}
		}
		s.applied[e.Seq]++
	}
	return nil
}

func envelopes(seqs ...uint64) []Envelope {
	out := make([]Envelope, len(seqs))
	for i, s := range seqs {
		out[i] = Envelope{Seq: s}
	}
	return out
}

// TestGroupCommitCombinesConcurrentBatches holds the first Apply while seven
// more callers arrive: they are applied together in one second Apply.
func TestGroupCommitCombinesConcurrentBatches(t *testing.T) {
	store := &recordingStore{applied: map[uint64]int{}, gate: make(chan struct{}), started: make(chan struct{}, 16)}
	g := newGroupCommit(store, 0, 1000)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	wg.Go(func() { errs[0] = g.Apply(t.Context(), envelopes(1, 2)) })
	<-store.started
	for i := 1; i < 8; i++ {
		wg.Go(func() { errs[i] = g.Apply(t.Context(), envelopes(uint64(10*i), uint64(10*i+1))) })
	}
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 7 })
	close(store.gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if len(store.calls) != 2 || len(store.calls[1]) != 14 {
		t.Fatalf("Apply calls %v, want the first batch and then the other seven combined", store.calls)
	}
	for seq, n := range store.applied {
		if n != 1 {
			t.Errorf("seq %d applied %d times", seq, n)
		}
	}
	if len(store.applied) != 16 {
		t.Errorf("%d events applied, want 16", len(store.applied))
	}
}

// TestGroupCommitKeepsPoisonWithItsCaller puts a poison event in one of three
// combined batches: only its caller gets the PoisonError (or the store's
// rejection); the others' events are applied.
func TestGroupCommitKeepsPoisonWithItsCaller(t *testing.T) {
	for _, reject := range []bool{false, true} {
		t.Run(fmt.Sprintf("rejected=%v", reject), func(t *testing.T) {
			store := &recordingStore{applied: map[uint64]int{}, poison: map[uint64]bool{21: true}, reject: reject,
				gate: make(chan struct{}), started: make(chan struct{}, 16)}
			g := newGroupCommit(store, 0, 1000)
			var wg sync.WaitGroup
			errs := make([]error, 4)
			wg.Go(func() { errs[0] = g.Apply(t.Context(), envelopes(1)) })
			<-store.started
			for i, batch := range [][]uint64{{10, 11}, {20, 21, 22}, {30, 31}} {
				wg.Go(func() { errs[i+1] = g.Apply(t.Context(), envelopes(batch...)) })
			}
			waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 3 })
			close(store.gate)
			wg.Wait()
			var poison *PoisonError
			switch {
			case reject && !errors.Is(errs[2], ErrRejected):
				t.Errorf("caller with the rejected event: %v, want ErrRejected", errs[2])
			case !reject && (!errors.As(errs[2], &poison) || poison.Seq != 21):
				t.Errorf("caller with the poison event: %v, want PoisonError for seq 21", errs[2])
			}
			for _, i := range []int{0, 1, 3} {
				if errs[i] != nil {
					t.Errorf("caller %d: %v", i, errs[i])
				}
			}
			for _, seq := range []uint64{1, 10, 11, 30, 31} {
				if store.applied[seq] == 0 {
					t.Errorf("seq %d not applied", seq)
				}
			}
		})
	}
}

// TestGroupCommitStoreFailureGoesToEveryCaller: a failing store (not a poison
// event) fails every combined caller once, without an Apply per caller.
func TestGroupCommitStoreFailureGoesToEveryCaller(t *testing.T) {
	down := errors.New("store down")
	store := &failingStore{err: down, gate: make(chan struct{}), started: make(chan struct{}, 16)}
	g := newGroupCommit(store, 0, 1000)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	wg.Go(func() { errs[0] = g.Apply(t.Context(), envelopes(1)) })
	<-store.started
	for i := 1; i < 4; i++ {
		wg.Go(func() { errs[i] = g.Apply(t.Context(), envelopes(uint64(10*i))) })
	}
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 3 })
	close(store.gate)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, down) {
			t.Errorf("caller %d: %v, want the store's error", i, err)
		}
	}
	if n := store.calls.Load(); n != 2 {
		t.Errorf("store called %d times, want 2 (the first batch, then the other three combined)", n)
	}
}

type failingStore struct {
	err     error
	gate    chan struct{}
	started chan struct{}
	calls   atomic.Int32
}

func (s *failingStore) Apply(ctx context.Context, _ []Envelope) error {
	s.calls.Add(1)
	s.started <- struct{}{}
	<-s.gate
	return s.err
}

// TestGroupCommitInterval: an idle store is written at once; the next Apply
// waits until the interval since the previous one began has passed.
func TestGroupCommitInterval(t *testing.T) {
	store := &recordingStore{applied: map[uint64]int{}}
	const interval = 80 * time.Millisecond
	g := newGroupCommit(store, interval, 1000)
	start := time.Now()
	if err := g.Apply(t.Context(), envelopes(1)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > interval/2 {
		t.Errorf("idle Apply took %s", d)
	}
	if err := g.Apply(t.Context(), envelopes(2)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < interval {
		t.Errorf("second Apply finished %s after the first began, want ≥ %s", d, interval)
	}
}

// TestGroupCommitCancelledFollowerLeaves: a queued caller whose context ends
// returns at once, its batch is not applied, and the callers behind it are.
func TestGroupCommitCancelledFollowerLeaves(t *testing.T) {
	store := &recordingStore{applied: map[uint64]int{}, gate: make(chan struct{}), started: make(chan struct{}, 16)}
	g := newGroupCommit(store, 0, 2) // one batch of two events per Apply
	var wg sync.WaitGroup
	var first, last error
	wg.Go(func() { first = g.Apply(t.Context(), envelopes(1, 2)) })
	<-store.started
	ctx, cancel := context.WithCancel(t.Context())
	cancelled := make(chan error, 1)
	go func() { cancelled <- g.Apply(ctx, envelopes(3, 4)) }()
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 1 })
	wg.Go(func() { last = g.Apply(t.Context(), envelopes(5, 6)) })
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 2 })
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	close(store.gate)
	wg.Wait()
	if first != nil || last != nil {
		t.Errorf("first %v, last %v", first, last)
	}
	if store.applied[3] != 0 || store.applied[5] != 1 {
		t.Errorf("applied %v: want 3 left out and 5 applied", store.applied)
	}
	want := [][]uint64{{1, 2}, {5, 6}}
	if !slices.EqualFunc(store.calls, want, slices.Equal) {
		t.Errorf("Apply calls %v, want %v", store.calls, want)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
