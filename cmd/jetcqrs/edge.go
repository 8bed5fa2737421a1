package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/readnode"
)

// leafRemote is the hub the embedded server joins in edge mode, nil
// otherwise.
func (c *Config) leafRemote() *jnats.LeafRemote {
	if !c.isEdge() {
		return nil
	}
	return &jnats.LeafRemote{URLs: strings.Split(c.NATSHubURL, ","), Credentials: c.NATSHubCreds}
}

// embeddedServerName is the embedded server's name: an edge's carries its
// domain, since servers joined by leaf connections must be named apart
// (with the hub's name twice, a mirror takes half a minute to start).
func (c *Config) embeddedServerName() string {
	if c.isEdge() {
		return jnats.DefaultServerName + "-" + c.NATSDomain
	}
	return ""
}

// openMirror makes the edge's EVENTS a mirror of the hub's, which the read
// node then consumes as it would the hub's stream: the mirror keeps the
// hub's sequence numbers.
func (m *Main) openMirror(ctx context.Context) error {
	if !m.isReadNode() || m.cfg.RedisURL != engineNone || m.cfg.ClickHouseURL != engineNone {
		return errors.New("nats-hub-url ($NATS_HUB_URL): an edge node is `jetcqrs query-api` with REDIS_URL=none and " +
			"CLICKHOUSE_URL=none and no ELASTICSEARCH_URL: it keeps every read model itself")
	}
	// The hub's last sequence, asked before the mirror is created, once
	// the hub's JetStream answers across the link.
	hubSeq := m.hubLastSeq(ctx)
	if _, err := jnats.EnsureMirror(ctx, m.js, jnats.DefaultStreamName, m.cfg.NATSHubDomain); err != nil {
		return err
	}
	m.awaitMirror(ctx, hubSeq)
	m.streamCfg = jnats.StreamConfig{Name: jnats.DefaultStreamName}
	m.replicas = 1
	m.edge = &readnode.EdgeMonitor{JS: m.js, Stream: jnats.DefaultStreamName, HubDomain: m.cfg.NATSHubDomain,
		Linked: m.natsServer.LeafLinked, Started: time.Now()}
	m.details["edge"] = m.edge.Detail
	m.logger.Info("edge node: EVENTS mirrors the hub's", "domain", m.cfg.NATSDomain, "hub_domain", m.cfg.NATSHubDomain)
	return nil
}

// hubLastSeq is the last sequence of the hub's stream, asked of the hub's
// JetStream across the leaf connection, so that the node is ready only once
// it has applied what the hub had at its start; 0 when the hub cannot be
// reached within a few seconds: the node then serves what its mirror holds.
func (m *Main) hubLastSeq(ctx context.Context) uint64 {
	hub, err := jetstream.NewWithDomain(m.nc, m.cfg.NATSHubDomain)
	if err != nil {
		return 0
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m.natsServer.LeafLinked() {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			s, err := hub.Stream(rctx, jnats.DefaultStreamName)
			cancel()
			if err == nil {
				return s.CachedInfo().State.LastSeq
			}
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(50 * time.Millisecond):
		}
	}
	m.logger.Warn("edge node: the hub's stream cannot be reached; serving what the mirror holds")
	return 0
}

// awaitMirror waits while the leaf link is up until the mirror holds the
// hub's sequence seq: the read node, opened next, is ready once it has
// applied what its stream held at its start, which is then what the hub
// held. A fresh edge copies the hub's stream here.
func (m *Main) awaitMirror(ctx context.Context, seq uint64) {
	if seq == 0 {
		return
	}
	m.logger.Info("edge node: copying the hub's stream", "hub_last_seq", seq)
	for m.natsServer.LeafLinked() && ctx.Err() == nil {
		st, err := jnats.Mirror(ctx, m.js, jnats.DefaultStreamName)
		if err == nil && st.LastSeq >= seq {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	m.logger.Warn("edge node: the link to the hub went down while copying its stream; serving what the mirror holds")
}
