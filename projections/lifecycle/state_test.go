package lifecycle

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const ttl = 15 * time.Second

// TestTwoOwnersNeverShareARebuild: the second process to ask while the
// first holds the lease is refused; the two never get the same generation
// number, even after the first one's lease expired mid-preparation.
func TestTwoOwnersNeverShareARebuild(t *testing.T) {
	t.Parallel()
	var s State // never recorded: generation 1 live
	a, drop, err := s.Acquire("a", t0, ttl)
	if err != nil || a.Rebuild != 2 || a.Phase != PhasePreparing || len(drop) != 0 {
		t.Fatalf("first Acquire = %+v, %v, %v; want generation 2 preparing", a, drop, err)
	}
	if _, _, err := a.Acquire("b", t0.Add(ttl-time.Second), ttl); !errors.Is(err, ErrRebuildUnderWay) {
		t.Fatalf("second Acquire within the lease: %v, want ErrRebuildUnderWay", err)
	}
	// a vanished while preparing: b reserves a new number and drops 2.
	b, drop, err := a.Acquire("b", t0.Add(ttl), ttl)
	if err != nil || b.Rebuild != 3 || b.Reserved != 3 || !slices.Equal(drop, []int{2}) {
		t.Fatalf("Acquire after expiry in preparation = %+v, %v, %v; want generation 3, drop [2]", b, drop, err)
	}
	// a comes back: every step it tries fails, so it cannot promote.
	if _, err := b.Ready("a"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Ready by the old owner: %v", err)
	}
	if _, err := b.Renew("a", t0.Add(ttl), ttl); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Renew by the old owner: %v", err)
	}
	if _, err := b.Promote("a", 2); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Promote by the old owner: %v", err)
	}
}

// TestRebuildRunsToRetirement walks one rebuild through its phases and
// checks which generations may be dropped at each.
func TestRebuildRunsToRetirement(t *testing.T) {
	t.Parallel()
	s := State{Live: 4, Reserved: 6}
	s, _, err := s.Acquire("a", t0, ttl)
	if err != nil || s.Rebuild != 7 {
		t.Fatalf("Acquire = %+v, %v; want generation 7 (numbers never reused)", s, err)
	}
	for _, tc := range []struct {
		gen  int
		drop bool
	}{{4, false}, {7, false}, {3, true}, {6, true}, {0, false}} {
		if got := s.MayDrop(tc.gen); got != tc.drop {
			t.Errorf("preparing: MayDrop(%d) = %v, want %v", tc.gen, got, tc.drop)
		}
	}
	if s.Applies(7) {
		t.Error("a generation being prepared is applied")
	}
	if _, err := s.Promote("a", 7); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Promote before Ready: %v", err)
	}
	if s, err = s.Ready("a"); err != nil || !s.Applies(7) || !s.Applies(4) {
		t.Fatalf("Ready = %+v, %v", s, err)
	}
	if s, err = s.Renew("a", t0.Add(10*time.Second), ttl); err != nil || !s.Expires.Equal(t0.Add(25*time.Second)) {
		t.Fatalf("Renew = %+v, %v", s, err)
	}
	if _, err := s.Promote("a", 8); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Promote of another generation: %v", err)
	}
	if s, err = s.Promote("a", 7); err != nil || s.Live != 7 || s.Retiring != 4 || s.Phase != PhaseRetiring {
		t.Fatalf("Promote = %+v, %v", s, err)
	}
	if s.MayDrop(7) || !s.MayDrop(4) || s.Applies(4) {
		t.Fatalf("after promotion: MayDrop(7)=%v MayDrop(4)=%v Applies(4)=%v", s.MayDrop(7), s.MayDrop(4), s.Applies(4))
	}
	// A process that took the lease over in retirement carries it on.
	taken, drop, err := s.Acquire("b", t0.Add(time.Minute), ttl)
	if err != nil || taken.Phase != PhaseRetiring || taken.Retiring != 4 || len(drop) != 0 {
		t.Fatalf("takeover in retirement = %+v, %v, %v", taken, drop, err)
	}
	if s, err = s.Retired("a"); err != nil || s.Phase != PhaseIdle || s.Owner != "" || s.Live != 7 || s.Reserved != 7 {
		t.Fatalf("Retired = %+v, %v", s, err)
	}
	next, _, err := s.Acquire("b", t0, ttl)
	if err != nil || next.Rebuild != 8 {
		t.Fatalf("next rebuild = %+v, %v; want generation 8", next, err)
	}
}

// TestTakeoverContinuesABuildAndAbandonLeavesLiveAlone: a build whose owner
// went silent is carried on at the same generation; abandoning it keeps the
// live generation, and only then may the built one be dropped.
func TestTakeoverContinuesABuildAndAbandonLeavesLiveAlone(t *testing.T) {
	t.Parallel()
	s, _, _ := State{Live: 2, Reserved: 2}.Acquire("a", t0, ttl)
	s, _ = s.Ready("a")
	b, drop, err := s.Acquire("b", t0.Add(ttl+time.Second), ttl)
	if err != nil || b.Rebuild != 3 || b.Phase != PhaseBuilding || b.Owner != "b" || len(drop) != 0 {
		t.Fatalf("takeover of a build = %+v, %v, %v; want b building 3", b, drop, err)
	}
	if b.MayDrop(3) {
		t.Fatal("the generation being built may be dropped")
	}
	if _, err := b.Abandon("a"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Abandon by the old owner: %v", err)
	}
	ab, err := b.Abandon("b")
	if err != nil || ab.Live != 2 || ab.Rebuild != 0 || ab.Phase != PhaseIdle || !ab.MayDrop(3) || ab.MayDrop(2) {
		t.Fatalf("Abandon = %+v, %v", ab, err)
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	p := func(delivered, floor []uint64, inFlight int) Progress {
		var pending uint64
		for i := range delivered {
			pending += 1000 - floor[i] // a stream of 1000 events per partition
		}
		return Progress{Delivered: delivered, AckFloor: floor, InFlight: inFlight, Pending: pending}
	}
	for _, tc := range []struct {
		name string
		f    Facts
		want Step
	}{
		{"far behind", Facts{NextIntact: true,
			Live: p([]uint64{900, 900}, []uint64{900, 900}, 0), Next: p([]uint64{900, 500}, []uint64{900, 500}, 0)}, Wait},
		{"a batch behind on one partition", Facts{NextIntact: true,
			Live: p([]uint64{900, 900}, []uint64{900, 900}, 0), Next: p([]uint64{900, 700}, []uint64{900, 700}, 0)}, Fence},
		// Fewer pending than the live one is not enough: what counts is
		// what the live one had been delivered.
		{"reached where live was", Facts{NextIntact: true,
			Live: p([]uint64{10, 20}, []uint64{8, 20}, 2), Next: p([]uint64{10, 20}, []uint64{10, 20}, 0)}, Fence},
		{"fenced, live still has events in flight", Facts{NextIntact: true, Fenced: true,
			Live: p([]uint64{12, 20}, []uint64{10, 20}, 2), Next: p([]uint64{12, 20}, []uint64{12, 20}, 0)}, Wait},
		{"fenced, live delivered more since", Facts{NextIntact: true, Fenced: true,
			Live: p([]uint64{12, 20}, []uint64{12, 20}, 0), Next: p([]uint64{11, 20}, []uint64{11, 20}, 0)}, Wait},
		{"fenced and covered", Facts{NextIntact: true, Fenced: true,
			Live: p([]uint64{12, 20}, []uint64{12, 20}, 0), Next: p([]uint64{12, 25}, []uint64{12, 25}, 0)}, Promote},
		// At the stream's end the delivered sequence passes events the
		// filter skips; with nothing in flight it is all acknowledged.
		{"fenced, at the stream's end, nothing in flight", Facts{NextIntact: true, Fenced: true,
			Live: p([]uint64{528, 528}, []uint64{528, 348}, 0), Next: p([]uint64{528, 528}, []uint64{481, 348}, 0)}, Promote},
		{"fenced, at the stream's end, the new one has events in flight", Facts{NextIntact: true, Fenced: true,
			Live: p([]uint64{528, 528}, []uint64{528, 348}, 0), Next: p([]uint64{528, 528}, []uint64{481, 348}, 1)}, Wait},
		{"fenced too long", Facts{NextIntact: true, Fenced: true, FencedFor: MaxFence,
			Live: p([]uint64{12, 20}, []uint64{12, 20}, 0), Next: p([]uint64{11, 20}, []uint64{11, 20}, 0)}, Unfence},
		{"consumers still being created", Facts{NextIntact: true,
			Live: p([]uint64{0, 0}, []uint64{0, 0}, 0), Next: Progress{Missing: 1}}, Wait},
		{"lost its data", Facts{NextIntact: false,
			Live: p([]uint64{1}, []uint64{1}, 0), Next: p([]uint64{1}, []uint64{1}, 0)}, Abandon},
		{"an empty stream", Facts{NextIntact: true,
			Live: p([]uint64{0, 0}, []uint64{0, 0}, 0), Next: p([]uint64{0, 0}, []uint64{0, 0}, 0)}, Fence},
	} {
		if got := Decide(tc.f); got != tc.want {
			t.Errorf("%s: Decide = %s, want %s", tc.name, got, tc.want)
		}
	}
}
