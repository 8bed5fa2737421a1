package natstest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// Leaf is one nats-server with JetStream in a domain of its own, joined to
// a hub cluster (StartHub) as a leaf node, as an edge site's embedded
// server is. Its leaf connection runs through a proxy the test can cut.
type Leaf struct {
	t      testing.TB
	srv    *natsserver.Server
	proxy  *linkProxy
	Domain string
}

// StartLeaf starts a leaf node in JetStream domain domain whose remote is
// c's nodes, and waits until the leaf connection is up.
func (c *Cluster) StartLeaf(t testing.TB, domain string) *Leaf {
	t.Helper()
	var targets []string
	for _, o := range c.opts {
		if o.LeafNode.Port == 0 {
			t.Fatal("natstest: StartLeaf needs a cluster started by StartHub")
		}
		targets = append(targets, fmt.Sprintf("127.0.0.1:%d", o.LeafNode.Port))
	}
	p := startLinkProxy(t, targets)
	remote, err := url.Parse("nats-leaf://" + p.addr())
	if err != nil {
		t.Fatal(err)
	}
	opts := &natsserver.Options{
		ServerName:             "leaf-" + domain,
		Host:                   "127.0.0.1",
		Port:                   freePorts(t, 1)[0],
		JetStream:              true,
		JetStreamDomain:        domain,
		StoreDir:               filepath.Join(t.TempDir(), "leaf"),
		NoSigs:                 true,
		NoLog:                  true,
		DisableJetStreamBanner: true,
		LeafNode: natsserver.LeafNodeOpts{
			Remotes:           []*natsserver.RemoteLeafOpts{{URLs: []*url.URL{remote}}},
			ReconnectInterval: 250 * time.Millisecond,
		},
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: configure leaf: %v", err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("natstest: leaf not accepting connections after 10s")
	}
	l := &Leaf{t: t, srv: ns, proxy: p, Domain: domain}
	l.WaitLinked(true)
	return l
}

// ClientURL is the leaf's own client URL.
func (l *Leaf) ClientURL() string { return l.srv.ClientURL() }

// Connect opens a client connection to the leaf, closed when the test ends.
func (l *Leaf) Connect(name string) (*natsgo.Conn, jetstream.JetStream) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := jnats.Connect(ctx, l.ClientURL(), name, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		l.t.Fatalf("natstest: connect to the leaf: %v", err)
	}
	l.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		l.t.Fatal(err)
	}
	return nc, js
}

// Cut closes the leaf connection and refuses it until Restore.
func (l *Leaf) Cut() {
	l.proxy.cut()
	l.WaitLinked(false)
}

// Restore lets the leaf connect to the hub again and waits until it has.
func (l *Leaf) Restore() {
	l.proxy.restore()
	l.WaitLinked(true)
}

// WaitLinked waits up to 30s until the leaf's connection to the hub is up
// (or down).
func (l *Leaf) WaitLinked(up bool) {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for (l.srv.NumLeafNodes() > 0) != up {
		if time.Now().After(deadline) {
			l.t.Fatalf("natstest: leaf connection up = %v after 30s, want %v", !up, up)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linkProxy forwards TCP connections to the first target that answers;
// cut closes every connection and refuses new ones until restore.
type linkProxy struct {
	ln      net.Listener
	targets []string
	mu      sync.Mutex
	down    bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func startLinkProxy(t testing.TB, targets []string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, targets: targets, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *linkProxy) addr() string { return p.ln.Addr().String() }

func (p *linkProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		var up net.Conn
		for _, target := range p.targets {
			if up, err = net.DialTimeout("tcp", target, 2*time.Second); err == nil {
				break
			}
		}
		if up == nil || !p.track(c, up) {
			_ = c.Close()
			continue
		}
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// track registers a connection pair unless the proxy is down.
func (p *linkProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *linkProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *linkProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *linkProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
