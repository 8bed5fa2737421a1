package natstest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// TestLeafMirrorsEventsAcrossACut is the footing of an edge site: a leaf
// node with a JetStream domain of its own mirrors EVENTS from the hub's
// domain. The leaf connection is cut while the hub keeps appending; the
// mirror keeps serving what it has and does not move; once the link is
// restored it converges, every message at the hub's sequence number with
// the hub's subject, headers and data.
func TestLeafMirrorsEventsAcrossACut(t *testing.T) {
	c := StartHub(t)
	_, hub := c.Connect("hub")
	c.Provision(hub, 4)
	leaf := c.StartLeaf(t, "edge")
	_, edge := leaf.Connect("edge")
	ctx := t.Context()

	var published atomic.Uint64
	publish := func(n int) {
		t.Helper()
		for range n {
			i := published.Load() + 1
			m := natsgo.NewMsg(fmt.Sprintf("events.order.%d.OrderPlaced", i%4))
			m.Header.Set(natsgo.MsgIdHdr, fmt.Sprintf("event-%d", i))
			m.Data = fmt.Appendf(nil, `{"n":%d}`, i)
			if _, err := hub.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(i-1)); err != nil {
				t.Fatalf("publish %d at the hub: %v", i, err)
			}
			published.Store(i)
		}
	}
	publish(100)

	mirror, err := edge.CreateStream(ctx, jetstream.StreamConfig{
		Name:    jnats.DefaultStreamName,
		Storage: jetstream.FileStorage,
		Mirror:  &jetstream.StreamSource{Name: jnats.DefaultStreamName, Domain: HubDomain},
	})
	if err != nil {
		t.Fatalf("create the mirror at the leaf: %v", err)
	}
	waitLastSeq(t, mirror, published.Load())

	leaf.Cut()
	held := lastSeq(t, mirror)
	var wg sync.WaitGroup
	wg.Go(func() { publish(200) })
	wg.Wait()
	// The mirror serves what it has while the link is down, and has
	// nothing newer.
	if got := lastSeq(t, mirror); got != held {
		t.Fatalf("the mirror moved from %d to %d with the link cut", held, got)
	}
	if _, err := mirror.GetMsg(ctx, held); err != nil {
		t.Fatalf("read seq %d at the leaf with the link cut: %v", held, err)
	}
	restored := time.Now()
	leaf.Restore()
	publish(50)
	waitLastSeq(t, mirror, published.Load())
	t.Logf("the mirror caught up %d messages in %s after the link was restored", published.Load()-held, time.Since(restored))

	src, err := hub.Stream(ctx, jnats.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= published.Load(); seq++ {
		want, err := src.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("hub seq %d: %v", seq, err)
		}
		got, err := mirror.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("mirror seq %d: %v", seq, err)
		}
		if got.Subject != want.Subject || !bytes.Equal(got.Data, want.Data) ||
			got.Header.Get(natsgo.MsgIdHdr) != want.Header.Get(natsgo.MsgIdHdr) {
			t.Fatalf("seq %d: mirror %s %s %q, hub %s %s %q", seq, got.Subject, got.Header.Get(natsgo.MsgIdHdr), got.Data,
				want.Subject, want.Header.Get(natsgo.MsgIdHdr), want.Data)
		}
	}
	info, err := mirror.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != published.Load() || info.Mirror == nil || info.Mirror.Lag != 0 {
		t.Fatalf("mirror state %+v, mirror info %+v; want %d messages and no lag", info.State, info.Mirror, published.Load())
	}
}

func lastSeq(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// waitLastSeq waits up to a minute until s's last sequence is seq.
func waitLastSeq(t *testing.T, s jetstream.Stream, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		info, err := s.Info(ctx)
		cancel()
		if err == nil && info.State.LastSeq == seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror is not at seq %d after a minute: %+v, %v", seq, info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
