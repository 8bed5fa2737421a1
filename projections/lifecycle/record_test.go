package lifecycle_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/natstest"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// TestKVRecordCompareAndSetAndWatch: writes from a stale revision lose;
// the bare numbers older releases wrote read as live generations; Watch
// starts with the current states, so a change made before it is not missed.
func TestKVRecordCompareAndSetAndWatch(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	r := checkCompareAndSet(t, js.JS, 1)
	kv, err := js.JS.KeyValue(t.Context(), lifecycle.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "sales", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if st, _, err := r.Get(t.Context(), "sales"); err != nil || st.Live != 3 || st.Reserved != 3 {
		t.Fatalf("a bare number reads as %+v, %v; want generation 3 live", st, err)
	}

	changes := make(chan lifecycle.Change, 8)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, func(c lifecycle.Change) { changes <- c }) }()
	next := func() lifecycle.Change {
		select {
		case c := <-changes:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no change watched within 5s")
			return lifecycle.Change{}
		}
	}
	seen := map[string]int{}
	for c := next(); !c.Ready; c = next() {
		seen[c.Model] = c.State.Live
	}
	if seen["orders"] != 1 || seen["sales"] != 3 || len(seen) != 2 {
		t.Fatalf("current states watched: %v; want orders 1 and sales 3", seen)
	}
	if _, err := kv.Put(t.Context(), "sales", []byte("4")); err != nil {
		t.Fatal(err)
	}
	if c := next(); c.Model != "sales" || c.State.Live != 4 {
		t.Fatalf("watched %+v, want sales at generation 4", c)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch ended with %v", err)
	}
}

// TestKVRecordCompareAndSetOnACluster: on a three-node cluster the bucket
// is created at three replicas, and a replicated bucket's lost
// compare-and-set (reported with another code than on one server) still
// reads as ErrChanged.
func TestKVRecordCompareAndSetOnACluster(t *testing.T) {
	t.Parallel()
	c := natstest.Start(t)
	_, js := c.Connect(t.Name())
	checkCompareAndSet(t, js, natstest.Size)
}

// checkCompareAndSet creates the record at replicas, twice, and checks
// that writes from a stale revision lose.
func checkCompareAndSet(t *testing.T, js jetstream.JetStream, replicas int) *lifecycle.KVRecord {
	t.Helper()
	r, err := lifecycle.EnsureKVRecord(t.Context(), js, replicas)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lifecycle.EnsureKVRecord(t.Context(), js, replicas); err != nil {
		t.Fatalf("second EnsureKVRecord: %v", err)
	}
	s, err := js.Stream(t.Context(), "KV_"+lifecycle.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Replicas; got != replicas {
		t.Fatalf("bucket stream at %d replicas, want %d", got, replicas)
	}
	st, rev, err := r.Get(t.Context(), "orders")
	if err != nil || st.Live != 1 || rev != 0 {
		t.Fatalf("Get before any record = %+v, %d, %v; want generation 1, revision 0", st, rev, err)
	}
	a, _, _ := st.Acquire("a", time.Now(), time.Minute)
	rev, err = r.Put(t.Context(), "orders", a, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := st.Acquire("b", time.Now(), time.Minute)
	if _, err := r.Put(t.Context(), "orders", b, 0); !errors.Is(err, lifecycle.ErrChanged) {
		t.Fatalf("Put over an absent record that now exists: %v, want ErrChanged", err)
	}
	ready, _ := a.Ready("a")
	if _, err := r.Put(t.Context(), "orders", ready, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(t.Context(), "orders", ready, rev); !errors.Is(err, lifecycle.ErrChanged) {
		t.Fatalf("Put from a stale revision: %v, want ErrChanged", err)
	}
	got, _, err := r.Get(t.Context(), "orders")
	if err != nil || got.Phase != lifecycle.PhaseBuilding || got.Owner != "a" || got.Rebuild != 2 {
		t.Fatalf("Get = %+v, %v; want a building generation 2", got, err)
	}
	return r
}
