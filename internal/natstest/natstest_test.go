package natstest

import (
	"testing"

	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// TestClusterProvisionsReplicatedStreams checks the harness itself: three
// nodes, the streams and the bucket at three replicas, and a new stream
// leader elected after the old one is killed.
func TestClusterProvisionsReplicatedStreams(t *testing.T) {
	c := Start(t)
	_, js := c.Connect(t.Name())
	c.Provision(js, 4)
	for _, name := range []string{jnats.DefaultStreamName, jnats.DefaultDeadLetterStreamName, "KV_" + lifecycle.Bucket} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info := s.CachedInfo()
		if info.Config.Replicas != Size || info.Cluster == nil || len(info.Cluster.Replicas) != Size-1 {
			t.Fatalf("stream %s: replicas %d, cluster %+v; want %d replicas", name, info.Config.Replicas, info.Cluster, Size)
		}
	}
	old := c.StreamLeader(jnats.DefaultStreamName)
	c.Kill(old)
	if now := c.StreamLeader(jnats.DefaultStreamName); now == old {
		t.Fatalf("node %d still leads EVENTS after it was killed", old+1)
	}
	c.Restart(old)
	c.WaitCurrent(js, jnats.DefaultStreamName)
}
