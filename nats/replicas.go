package nats

import (
	"context"
	"errors"
	"fmt"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClusterReplicas is the replica count for the streams and buckets of
// jetcqrs on the server nc is connected to: 3 when that server belongs to a
// cluster (its INFO names one), 1 otherwise. Three replicas keep every
// stream writable through the loss of any one server; a JetStream cluster
// needs at least three servers for that, so a deployment on a smaller one
// says how many replicas it wants (NATS_REPLICAS) instead.
func ClusterReplicas(nc *natsgo.Conn) int {
	if nc.ConnectedClusterName() != "" {
		return 3
	}
	return 1
}

// ErrReplicasUnavailable is matched by the error of creating or raising a
// stream at more replicas than the cluster has JetStream servers for.
var ErrReplicasUnavailable = errors.New("nats: not enough JetStream servers for the replicas")

// RaiseReplicas raises stream to replicas when it has fewer, and returns the
// count it had. It never lowers them: fewer copies of the event log is an
// operator's decision (nats stream edit NAME --replicas N). A key-value
// bucket is the stream "KV_<bucket>".
//
// A cluster takes the raise with one of its servers down (that replica
// catches up when the server returns); a cluster without the servers for
// the count refuses it (ErrReplicasUnavailable), and the stream keeps
// serving at its count.
func RaiseReplicas(ctx context.Context, js jetstream.JetStream, stream string, replicas int) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("nats: look up stream %s: %w", stream, err)
	}
	cfg := s.CachedInfo().Config
	had := cfg.Replicas
	if had >= replicas {
		return had, nil
	}
	cfg.Replicas = replicas
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return had, fmt.Errorf("nats: raise stream %s from %d to %d replicas: %w", stream, had, replicas, replicasErr(err))
	}
	return had, nil
}

// replicasErr marks the errors a server gives when it lacks the servers for
// the replicas asked: no cluster, too few peers, or peers offline.
func replicasErr(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrCodeInsufficientResources, jsErrCodeClusterNoPeers, jsErrCodeReplicasNotSupported:
			return fmt.Errorf("%w: %w", ErrReplicasUnavailable, err)
		}
	}
	return err
}

// JetStream API error codes of nats-server (server/jetstream_errors_generated.go).
const (
	jsErrCodeClusterNoPeers        jetstream.ErrorCode = 10005 // no suitable peers for placement
	jsErrCodeInsufficientResources jetstream.ErrorCode = 10023
	jsErrCodeReplicasNotSupported  jetstream.ErrorCode = 10074 // replicas > 1 not supported in non-clustered mode
)
