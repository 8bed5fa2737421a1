package nats

import (
	"errors"
	"testing"
)

// TestReplicasOnOneServer: a server outside a cluster takes one replica,
// and asking it for more fails with ErrReplicasUnavailable, on creation and
// on raising alike.
func TestReplicasOnOneServer(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	nc, js := connect(t, srv.ClientURL(), logger)
	if got := ClusterReplicas(nc); got != 1 {
		t.Fatalf("ClusterReplicas on one server = %d, want 1", got)
	}
	if _, err := EnsureStream(t.Context(), js, StreamConfig{Replicas: 3}); !errors.Is(err, ErrReplicasUnavailable) {
		t.Fatalf("EnsureStream at 3 replicas on one server: %v, want ErrReplicasUnavailable", err)
	}
	if _, err := EnsureStream(t.Context(), js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	had, err := RaiseReplicas(t.Context(), js, DefaultStreamName, 3)
	if had != 1 || !errors.Is(err, ErrReplicasUnavailable) {
		t.Fatalf("RaiseReplicas to 3 on one server = %d, %v; want 1, ErrReplicasUnavailable", had, err)
	}
}
