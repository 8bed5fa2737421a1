package nats

import (
	"maps"
	"slices"
	"testing"
	"time"
)

// TestAppliedNoticesReachSubscribers: a projector's notice reaches a query
// API's subscription on another connection as the aggregates it named, in
// order; a body that is not a notice is ignored and later notices still
// arrive; an empty notice is not sent at all.
func TestAppliedNoticesReachSubscribers(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	projector, _ := connect(t, srv.ClientURL(), logger)
	queryAPI, _ := connect(t, srv.ClientURL(), logger)

	got := make(chan [2]string, 16)
	sub, err := SubscribeApplied(queryAPI, func(typ, id string) { got <- [2]string{typ, id} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	raw, err := queryAPI.SubscribeSync(AppliedSubject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Unsubscribe() })
	if err := queryAPI.Flush(); err != nil { // the subscription is on the server
		t.Fatal(err)
	}

	if err := PublishApplied(projector, maps.All(map[string]string{})); err != nil {
		t.Fatalf("empty notice: %v", err)
	}
	if err := projector.Publish(AppliedSubject, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"order", "o-1"}, {"product", "P-1"}, {"order", "o-2"}}
	if err := PublishApplied(projector, func(yield func(string, string) bool) {
		for _, k := range want {
			if !yield(k[0], k[1]) {
				return
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := projector.Flush(); err != nil {
		t.Fatal(err)
	}

	var keys [][2]string
	timeout := time.After(5 * time.Second)
	for len(keys) < len(want) {
		select {
		case k := <-got:
			keys = append(keys, k)
		case <-timeout:
			t.Fatalf("got %v, want %v", keys, want)
		}
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("got %v, want %v", keys, want)
	}
	// Nothing else was delivered.
	if err := queryAPI.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-got:
		t.Fatalf("unexpected notice %v", k)
	case <-time.After(100 * time.Millisecond):
	}
	if n, _, _ := raw.Pending(); n != 2 {
		t.Fatalf("%d messages on %s, want 2 (the bad body and the notice; an empty notice is not sent)", n, AppliedSubject)
	}
}
