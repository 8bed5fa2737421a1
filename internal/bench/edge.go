package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/models"
	"github.com/jetcqrs/jetcqrs/readnode"
)

// EdgeCatchUpConfig configures EdgeCatchUp.
type EdgeCatchUpConfig struct {
	// Events are published at the hub while the edges' links are cut.
	Events int
	Log    io.Writer
}

// EdgeCatchUp measures how fast an edge catches up after its link to the
// hub was cut: a hub (embedded server in domain hub) and two edges joined
// to it as leaf nodes through links the benchmark cuts, one a bare mirror
// of EVENTS, the other an edge read node (mirror + every model in bbolt and
// Bleve). Both links are cut, Events events published at the hub, then the
// bare mirror's link restored and timed until it holds them, then the read
// node's until every model has applied them.
func EdgeCatchUp(ctx context.Context, cfg EdgeCatchUpConfig) (string, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir, err := os.MkdirTemp("", "jetcqrs-bench-edge-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	leafAddr, err := freeAddr()
	if err != nil {
		return "", err
	}
	hub, err := jnats.StartEmbedded(jnats.ServerConfig{Port: jnats.RandomPort, StoreDir: filepath.Join(dir, "hub"),
		PasswordFile: filepath.Join(dir, "hub-password"), Domain: "hub", LeafAddr: leafAddr}, logger)
	if err != nil {
		return "", err
	}
	defer hub.Shutdown()
	hnc, err := jnats.Connect(ctx, hub.ClientURL(), "bench-hub", logger)
	if err != nil {
		return "", err
	}
	defer hnc.Close()
	hjs, err := jetstream.New(hnc)
	if err != nil {
		return "", err
	}
	if _, err := jnats.EnsureStream(ctx, hjs, jnats.StreamConfig{}); err != nil {
		return "", err
	}
	warm := 2000
	events := eventMix(warm+cfg.Events, 200, 11)
	if err := publishEvents(ctx, hjs, events[:warm]); err != nil {
		return "", err
	}
	creds := hub.Credentials()
	startEdge := func(name string) (*jnats.Server, jetstream.JetStream, *edgeLink, func(), error) {
		link, err := startEdgeLink(leafAddr)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		srv, err := jnats.StartEmbedded(jnats.ServerConfig{Port: jnats.RandomPort, StoreDir: filepath.Join(dir, name),
			PasswordFile: filepath.Join(dir, name+"-password"), Domain: name, Name: "jetcqrs-" + name,
			Hub: &jnats.LeafRemote{URLs: []string{"nats-leaf://" + creds.User + ":" + creds.Password + "@" + link.addr()}}}, logger)
		if err != nil {
			link.close()
			return nil, nil, nil, nil, err
		}
		if err := waitLinked(ctx, srv); err != nil {
			srv.Shutdown()
			link.close()
			return nil, nil, nil, nil, err
		}
		nc, err := jnats.Connect(ctx, srv.ClientURL(), "bench-"+name, logger)
		if err == nil {
			var js jetstream.JetStream
			if js, err = jetstream.New(nc); err == nil {
				if _, err = jnats.EnsureMirror(ctx, js, jnats.DefaultStreamName, "hub"); err == nil {
					return srv, js, link, func() { nc.Close(); srv.Shutdown(); link.close() }, nil
				}
			}
			nc.Close()
		}
		srv.Shutdown()
		link.close()
		return nil, nil, nil, nil, err
	}
	bareSrv, bareJS, bareLink, stopBare, err := startEdge("edge-bare")
	if err != nil {
		return "", err
	}
	defer stopBare()
	nodeSrv, nodeJS, nodeLink, stopNode, err := startEdge("edge-node")
	if err != nil {
		return "", err
	}
	defer stopNode()
	names := []string{readnode.Catalog, readnode.Orders, readnode.Inventory, readnode.Sales}
	nctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	if err := waitMirror(ctx, bareJS, uint64(warm)); err != nil {
		return "", err
	}
	if err := waitMirror(ctx, nodeJS, uint64(warm)); err != nil {
		return "", err
	}
	node, err := readnode.Open(ctx, readnode.Config{Dir: filepath.Join(dir, "readnode"), JS: nodeJS, Models: names, Logger: logger})
	if err != nil {
		return "", err
	}
	wg.Go(func() { _ = node.Run(nctx) })
	defer func() { cancel(); wg.Wait(); node.Close() }()
	if err := waitApplied(ctx, node, lastSeqs(events[:warm])); err != nil {
		return "", err
	}
	fmt.Fprintf(cfg.Log, "edge-catch-up: both edges hold the first %d events\n", warm)

	bareLink.cut()
	nodeLink.cut()
	for _, srv := range []*jnats.Server{bareSrv, nodeSrv} {
		for srv.LeafLinked() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	fmt.Fprintf(cfg.Log, "edge-catch-up: links cut; publishing %d events at the hub\n", cfg.Events)
	if err := publishEvents(ctx, hjs, events[warm:]); err != nil {
		return "", err
	}
	total := uint64(len(events))
	// Timed from the moment the leaf connection is up again: the server's
	// reconnect interval is not the catch-up's.
	bareLink.restore()
	if err := waitLinked(ctx, bareSrv); err != nil {
		return "", err
	}
	bare, err := measure(func() error { return waitMirror(ctx, bareJS, total) })
	if err != nil {
		return "", err
	}
	fmt.Fprintf(cfg.Log, "edge-catch-up: bare mirror %d events in %s\n", cfg.Events, bare.wall)
	nodeLink.restore()
	if err := waitLinked(ctx, nodeSrv); err != nil {
		return "", err
	}
	want := lastSeqs(events)
	edge, err := measure(func() error { return waitApplied(ctx, node, want) })
	if err != nil {
		return "", err
	}
	fmt.Fprintf(cfg.Log, "edge-catch-up: edge read node %d events in %s\n", cfg.Events, edge.wall)
	n := uint64(cfg.Events)
	return fmt.Sprintf(`## Edge catch-up

%s, load %s at the end. A hub (embedded nats-server, domain hub) and two edges joined to it as leaf nodes through TCP
links the benchmark cuts: a bare mirror of EVENTS, and an edge read node (the mirror and every model,
catalog in Bleve, orders, inventory and sales in bbolt). Both links cut, %d events (the shop mix:
products, orders placed, paid, shipped, delivered or cancelled, restocks) published at the hub, then
each link restored in turn and timed, from the moment the leaf connection is up again, until the bare
mirror holds every event, and until every model of the read node has applied them.
`+"`jetcqrs-bench edge-catch-up --duration D`"+` publishes 5,000 events per second of D.

| after the link is restored | wall | events/s | CPU-seconds (whole process) |
|---|---:|---:|---:|
| bare mirror (copy only) | %s | %.0f | %.2f |
| edge read node (copy + apply, 4 models) | %s | %.0f | %.2f |

The edge caught up at %.2f× the bare mirror's rate. Bringing the events across the link is the bare
mirror's share; the rest is applying them to four models, each batch a transaction with its
checkpoint.
`, Machine(), loadString(), cfg.Events, bare.wall.Round(time.Millisecond), bare.rate(n), bare.cpu.Seconds(),
		edge.wall.Round(time.Millisecond), edge.rate(n), edge.cpu.Seconds(), edge.rate(n)/bare.rate(n)), nil
}

// lastSeqs is, per model, the sequence of the last of events it applies.
func lastSeqs(events []projections.Envelope) map[string]uint64 {
	out := map[string]uint64{}
	for _, s := range models.Specs() {
		for _, e := range events {
			if slices.Contains(s.AggregateTypes, e.AggregateType) && (len(s.EventTypes) == 0 || slices.Contains(s.EventTypes, e.EventType)) {
				out[s.Name] = max(out[s.Name], e.Seq)
			}
		}
	}
	return out
}

func waitApplied(ctx context.Context, node *readnode.Node, want map[string]uint64) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st, err := node.Status(ctx)
		if err != nil {
			return err
		}
		done := true
		for _, m := range st.([]readnode.ModelStatus) {
			done = done && m.Applied >= want[m.Name]
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edge-catch-up: the read node has not applied %v within 10 minutes: %+v", want, st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func waitLinked(ctx context.Context, srv *jnats.Server) error {
	deadline := time.Now().Add(time.Minute)
	for !srv.LeafLinked() {
		if time.Now().After(deadline) {
			return fmt.Errorf("edge-catch-up: the leaf connection is not back within a minute")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

func waitMirror(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st, err := jnats.Mirror(ctx, js, jnats.DefaultStreamName)
		if err == nil && st.LastSeq >= seq {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edge-catch-up: the mirror is not at %d within 10 minutes: %+v %v", seq, st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// edgeLink forwards TCP connections to target; cut closes them and refuses
// new ones until restore.
type edgeLink struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startEdgeLink(target string) (*edgeLink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &edgeLink{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	l.wg.Go(l.accept)
	return l, nil
}

func (l *edgeLink) addr() string { return l.ln.Addr().String() }

func (l *edgeLink) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", l.target, 2*time.Second)
		l.mu.Lock()
		if err != nil || l.down {
			l.mu.Unlock()
			_ = c.Close()
			if up != nil {
				_ = up.Close()
			}
			continue
		}
		l.conns[c], l.conns[up] = struct{}{}, struct{}{}
		l.mu.Unlock()
		l.wg.Go(func() { l.pipe(c, up) })
		l.wg.Go(func() { l.pipe(up, c) })
	}
}

func (l *edgeLink) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	l.mu.Lock()
	delete(l.conns, dst)
	delete(l.conns, src)
	l.mu.Unlock()
}

func (l *edgeLink) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		_ = c.Close()
	}
}

func (l *edgeLink) restore() {
	l.mu.Lock()
	l.down = false
	l.mu.Unlock()
}

func (l *edgeLink) close() {
	_ = l.ln.Close()
	l.cut()
	l.wg.Wait()
}
