// Package natstest runs a three-node JetStream cluster of embedded
// nats-servers on loopback for tests: the EVENTS and DLQ streams and the
// read models' key-value bucket at three replicas, a way to find and kill a
// stream's leader, and to bring a killed node back with its store.
package natstest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// Size is the number of nodes, and the replicas of what Provision creates.
const Size = 3

// Cluster is three nats-servers routed to each other on 127.0.0.1, each with
// its own store under the test's temporary directory. Every node is shut
// down when the test ends.
type Cluster struct {
	t    testing.TB
	mu   sync.Mutex
	opts []*natsserver.Options
	srvs []*natsserver.Server
}

// HubDomain is the JetStream domain of a cluster started by StartHub: a
// leaf node's streams reach its API as $JS.hub.API.
const HubDomain = "hub"

// Start starts the cluster and waits until JetStream has a meta leader.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return start(t, false)
}

// StartHub starts the cluster in JetStream domain HubDomain, accepting
// leaf node connections (StartLeaf).
func StartHub(t testing.TB) *Cluster {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, hub bool) *Cluster {
	t.Helper()
	clientPorts, routePorts, leafPorts := freePorts(t, Size), freePorts(t, Size), freePorts(t, Size)
	routes := make([]string, Size)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	dir := t.TempDir()
	c := &Cluster{t: t, opts: make([]*natsserver.Options, Size), srvs: make([]*natsserver.Server, Size)}
	for i := range Size {
		c.opts[i] = &natsserver.Options{
			ServerName:             fmt.Sprintf("n%d", i+1),
			Host:                   "127.0.0.1",
			Port:                   clientPorts[i],
			JetStream:              true,
			StoreDir:               filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			NoSigs:                 true,
			NoLog:                  true,
			DisableJetStreamBanner: true,
			Cluster: natsserver.ClusterOpts{
				Name: "jetcqrs-test",
				Host: "127.0.0.1",
				Port: routePorts[i],
			},
			Routes: natsserver.RoutesFromStr(strings.Join(routes, ",")),
		}
		if hub {
			c.opts[i].JetStreamDomain = HubDomain
			// Not advertised: a leaf reaches the hub through the address it
			// was given only, so a test can cut that link.
			c.opts[i].LeafNode = natsserver.LeafNodeOpts{Host: "127.0.0.1", Port: leafPorts[i], NoAdvertise: true}
		}
	}
	t.Cleanup(c.shutdown)
	for i := range Size {
		c.start(i)
	}
	c.WaitMetaLeader()
	return c
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	ns, err := natsserver.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("natstest: configure node %d: %v", i+1, err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		c.t.Fatalf("natstest: node %d not accepting connections after 10s", i+1)
	}
	c.mu.Lock()
	c.srvs[i] = ns
	c.mu.Unlock()
}

func (c *Cluster) shutdown() {
	c.mu.Lock()
	srvs := append([]*natsserver.Server(nil), c.srvs...)
	c.mu.Unlock()
	for _, s := range srvs {
		if s != nil {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}

// WaitMetaLeader waits up to 30s until a running node leads JetStream's
// meta group, which answers stream lookups and changes: after Kill of the
// meta leader, its successor takes a few seconds.
func (c *Cluster) WaitMetaLeader() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.running() {
			if s.JetStreamIsLeader() {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("natstest: no JetStream meta leader within 30s")
}

func (c *Cluster) running() []*natsserver.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*natsserver.Server
	for _, s := range c.srvs {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// ClientURL lists every node, so a client fails over between them.
func (c *Cluster) ClientURL() string {
	urls := make([]string, Size)
	for i, o := range c.opts {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return strings.Join(urls, ",")
}

// Connect opens a client connection to the cluster, closed when the test
// ends.
func (c *Cluster) Connect(name string) (*natsgo.Conn, jetstream.JetStream) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := jnats.Connect(ctx, c.ClientURL(), name, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		c.t.Fatalf("natstest: connect: %v", err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}

// Provision creates EVENTS (with partitions partitions), DLQ and the read
// models' generations bucket, each at Size replicas.
func (c *Cluster) Provision(js jetstream.JetStream, partitions int) jnats.StreamConfig {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := jnats.StreamConfig{Partitions: partitions, Replicas: Size}
	if _, err := jnats.EnsureStream(ctx, js, cfg); err != nil {
		c.t.Fatalf("natstest: provision EVENTS: %v", err)
	}
	if _, err := jnats.EnsureDeadLetterStream(ctx, js, jnats.DeadLetterConfig{Replicas: Size}); err != nil {
		c.t.Fatalf("natstest: provision DLQ: %v", err)
	}
	if _, err := lifecycle.EnsureKVRecord(ctx, js, Size); err != nil {
		c.t.Fatalf("natstest: provision bucket %s: %v", lifecycle.Bucket, err)
	}
	return cfg
}

// StreamLeader returns the index of the node leading stream (a key-value
// bucket's is "KV_<bucket>"), waiting up to 30s for one to be elected.
func (c *Cluster) StreamLeader(stream string) int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		srvs := append([]*natsserver.Server(nil), c.srvs...)
		c.mu.Unlock()
		for i, s := range srvs {
			if s != nil && s.JetStreamIsStreamLeader(natsserver.DEFAULT_GLOBAL_ACCOUNT, stream) {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("natstest: no leader for stream %s within 30s", stream)
	return -1
}

// WaitCurrent waits, up to two minutes, until stream has a leader and every
// replica is online and caught up: call it after Restart before killing
// another node, or the cluster may be left without a quorum.
func (c *Cluster) WaitCurrent(js jetstream.JetStream, stream string) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, stream)
		cancel()
		if err == nil {
			if cl := s.CachedInfo().Cluster; cl != nil && cl.Leader != "" && len(cl.Replicas) == Size-1 {
				current := true
				for _, p := range cl.Replicas {
					current = current && p.Current && !p.Offline
				}
				if current {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: stream %s not current on every node within 2 minutes (last error %v)", stream, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill stops node i at once, as a crash would (its store stays).
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts node i again on its ports and store.
func (c *Cluster) Restart(i int) { c.start(i) }

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	var ls []net.Listener
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
