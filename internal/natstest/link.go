package natstest

import (
	"fmt"
	"testing"
)

// Link is a TCP link a test can cut: a connection through it reaches the
// first of its targets that answers. It carries an edge process's leaf
// connection to a hub (LeafLink), or any other connection between sites.
type Link struct{ p *linkProxy }

// StartLink starts a link to targets (host:port), closed when the test
// ends.
func StartLink(t testing.TB, targets ...string) *Link {
	t.Helper()
	return &Link{p: startLinkProxy(t, targets)}
}

// LeafLink starts a link to the leaf node ports of a cluster started by
// StartHub.
func (c *Cluster) LeafLink(t testing.TB) *Link {
	t.Helper()
	var targets []string
	for _, o := range c.opts {
		if o.LeafNode.Port == 0 {
			t.Fatal("natstest: LeafLink needs a cluster started by StartHub")
		}
		targets = append(targets, fmt.Sprintf("127.0.0.1:%d", o.LeafNode.Port))
	}
	return StartLink(t, targets...)
}

// Addr is the address to dial (host:port).
func (l *Link) Addr() string { return l.p.addr() }

// Cut closes every connection through the link and refuses new ones until
// Restore.
func (l *Link) Cut() { l.p.cut() }

// Restore accepts connections again.
func (l *Link) Restore() { l.p.restore() }

// NumLeafNodes is the number of leaf connections the running nodes hold.
func (c *Cluster) NumLeafNodes() int {
	n := 0
	for _, s := range c.running() {
		n += s.NumLeafNodes()
	}
	return n
}
