package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/httpx"
	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// StaleHeader is the response header of every read at an edge node: whole
// seconds since the edge last knew it had every event of the hub.
const StaleHeader = "Jetcqrs-Stale-Seconds"

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
	m.edge = &edgeMonitor{js: m.js, stream: jnats.DefaultStreamName, hubDomain: m.cfg.NATSHubDomain,
		linked: m.natsServer.LeafLinked, started: time.Now()}
	m.details["edge"] = m.edge.detail
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

// edgeMonitor follows the mirror, to tell how stale the edge's reads are.
type edgeMonitor struct {
	js        jetstream.JetStream
	stream    string
	hubDomain string
	linked    func() bool
	started   time.Time

	mu      sync.Mutex
	contact time.Time // the last moment the edge had everything the hub had
	state   jnats.MirrorState
	isLink  bool
}

// Run polls the mirror until ctx ends.
func (e *edgeMonitor) Run(ctx context.Context) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := jnats.Mirror(pctx, e.js, e.stream)
		cancel()
		linked := e.linked()
		e.mu.Lock()
		e.isLink = linked
		if err == nil {
			e.state = st
			e.contact = lastContact(e.contact, time.Now(), linked, st)
		}
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// lastContact is the moment the edge last had everything the hub had,
// given the previous one and the mirror's state observed at now. Only a
// mirror heard from over a live link with nothing left to copy counts: a
// mirror restarting its copy while the link is down resets its own clock.
func lastContact(prev, now time.Time, linked bool, st jnats.MirrorState) time.Time {
	if !linked || st.Active < 0 || st.Lag > 0 {
		return prev
	}
	if c := now.Add(-st.Active); c.After(prev) {
		return c
	}
	return prev
}

// staleness is how long ago the edge last had everything the hub had; since
// the process started when it has not known that yet.
func (e *edgeMonitor) staleness(now time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	since := e.contact
	if since.IsZero() {
		since = e.started
	}
	return max(now.Sub(since), 0)
}

// Header sets StaleHeader on every response.
func (e *edgeMonitor) Header(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(StaleHeader, strconv.FormatInt(int64(e.staleness(time.Now())/time.Second), 10))
		next.ServeHTTP(w, r)
	})
}

// detail is the edge's part of /readyz: the node stays ready while the link
// is down, serving what it has, and says how stale that is.
func (e *edgeMonitor) detail(context.Context) any {
	now := time.Now()
	stale := e.staleness(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]any{
		"hub_domain":      e.hubDomain,
		"hub_linked":      e.isLink,
		"stale_seconds":   int64(stale / time.Second),
		"mirror_lag":      e.state.Lag,
		"mirror_last_seq": e.state.LastSeq,
		"last_contact":    nil,
	}
	if !e.contact.IsZero() {
		out["last_contact"] = e.contact.UTC().Format(time.RFC3339)
	}
	return out
}

// mountCommandForward serves the command API's routes at an edge node by
// forwarding each request to the hub's command API, bearer token,
// Idempotency-Key and If-Match included, and returning the hub's answer
// (with its X-Consistency-Token). A hub that cannot be reached, or none
// configured, is 503 hub_unreachable: a retry with the same
// Idempotency-Key is safe either way.
func (m *Main) mountCommandForward(r chi.Router) {
	var handle http.HandlerFunc
	if m.cfg.HubAPIURL == "" {
		handle = func(w http.ResponseWriter, req *http.Request) {
			httpx.WriteProblem(w, req, httpx.CodeHubUnreachable, "this edge node forwards no commands (HUB_API_URL is not set); send them to the hub")
		}
	} else {
		target, _ := url.Parse(m.cfg.HubAPIURL) // validated
		logger := m.logger
		handle = (&httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.SetXForwarded()
			},
			Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
				TLSHandshakeTimeout:   3 * time.Second,
				ResponseHeaderTimeout: m.cfg.CommandTimeout + 5*time.Second,
				MaxIdleConnsPerHost:   32,
				IdleConnTimeout:       time.Minute,
			},
			ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
				logger.WarnContext(req.Context(), "forwarding a command to the hub failed", "path", req.URL.Path, "err", err)
				httpx.WriteProblem(w, req, httpx.CodeHubUnreachable,
					"the hub cannot be reached from this edge node; retry later with the same Idempotency-Key")
			},
		}).ServeHTTP
	}
	r.Post("/v1/products", handle)
	r.Patch("/v1/products/{sku}", handle)
	r.Post("/v1/inventory/{sku}/adjustments", handle)
	r.Post("/v1/orders", handle)
	r.Post("/v1/orders/{id}/{transition}", handle)
}
