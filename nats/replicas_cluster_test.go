package nats_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/natstest"
	"github.com/jetcqrs/jetcqrs/nats"
)

// TestReplicasOnACluster: a cluster takes three replicas; a stream created
// at one (a deployment grown from one server) is raised to three and never
// lowered, even while a node is down.
func TestReplicasOnACluster(t *testing.T) {
	t.Parallel()
	c := natstest.Start(t)
	nc, js := c.Connect(t.Name())
	if got := nats.ClusterReplicas(nc); got != natstest.Size {
		t.Fatalf("ClusterReplicas on a %d-node cluster = %d, want %d", natstest.Size, got, natstest.Size)
	}
	ctx := t.Context()
	if _, err := nats.EnsureStream(ctx, js, nats.StreamConfig{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := nats.EnsureStream(ctx, js, nats.StreamConfig{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Replicas; got != 1 {
		t.Fatalf("EnsureStream changed an existing stream's replicas to %d; raising is RaiseReplicas's", got)
	}
	if had, err := nats.RaiseReplicas(ctx, js, nats.DefaultStreamName, 3); had != 1 || err != nil {
		t.Fatalf("RaiseReplicas = %d, %v; want 1, nil", had, err)
	}
	c.WaitCurrent(js, nats.DefaultStreamName)
	if had, err := nats.RaiseReplicas(ctx, js, nats.DefaultStreamName, 1); had != 3 || err != nil {
		t.Fatalf("RaiseReplicas to 1 = %d, %v; want 3, nil", had, err)
	}
	if got := replicas(t, js, nats.DefaultStreamName); got != 3 {
		t.Fatalf("EVENTS at %d replicas after asking for 1; want them kept at 3", got)
	}

	if _, err := nats.EnsureDeadLetterStream(ctx, js, nats.DeadLetterConfig{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	// With a node down (not the one holding DLQ's single replica) the
	// server still takes the raise: the missing replica catches up when its
	// node returns.
	down := (c.StreamLeader(nats.DefaultDeadLetterStreamName) + 1) % natstest.Size
	c.Kill(down)
	c.WaitMetaLeader()
	// The client reconnects and the cluster settles meanwhile.
	// A request may time out until then (and a raise that timed out may
	// have landed).
	deadline := time.Now().Add(30 * time.Second)
	for retried := false; ; retried = true {
		had, err := nats.RaiseReplicas(ctx, js, nats.DefaultDeadLetterStreamName, 3)
		if errors.Is(err, context.DeadlineExceeded) && time.Now().Before(deadline) {
			continue
		}
		if had != 1 && !(retried && had == 3) || err != nil {
			t.Fatalf("RaiseReplicas with node %d down = %d, %v; want 1, nil", down+1, had, err)
		}
		break
	}
	c.Restart(down)
	c.WaitCurrent(js, nats.DefaultDeadLetterStreamName)
}

func replicas(t *testing.T, js jetstream.JetStream, stream string) int {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config.Replicas
}
