package readnode

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
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

// EdgeMonitor follows the mirror, to tell how stale the edge's reads are.
type EdgeMonitor struct {
	JS        jetstream.JetStream
	Stream    string
	HubDomain string
	Linked    func() bool // whether the leaf link to the hub is up
	Started   time.Time

	mu      sync.Mutex
	contact time.Time // the last moment the edge had everything the hub had
	state   jnats.MirrorState
	isLink  bool
}

// Run polls the mirror until ctx ends.
func (e *EdgeMonitor) Run(ctx context.Context) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := jnats.Mirror(pctx, e.JS, e.Stream)
		cancel()
		linked := e.Linked()
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
func (e *EdgeMonitor) staleness(now time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	since := e.contact
	if since.IsZero() {
		since = e.Started
	}
	return max(now.Sub(since), 0)
}

// Header sets StaleHeader on every response.
func (e *EdgeMonitor) Header(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(StaleHeader, strconv.FormatInt(int64(e.staleness(time.Now())/time.Second), 10))
		next.ServeHTTP(w, r)
	})
}

// Detail is the edge's part of /readyz: the node stays ready while the link
// is down, serving what it has, and says how stale that is.
func (e *EdgeMonitor) Detail(context.Context) any {
	now := time.Now()
	stale := e.staleness(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]any{
		"hub_domain":      e.HubDomain,
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

// MountCommandForward serves the command API's routes at an edge node by
// forwarding each request to the hub's command API, bearer token,
// Idempotency-Key and If-Match included, and returning the hub's answer
// (with its X-Consistency-Token). A hub that cannot be reached, or none
// configured, is 503 hub_unreachable: a retry with the same
// Idempotency-Key is safe either way.
// hubAPI is the hub's command API base URL (validated), "" for none;
// timeout bounds the hub's command.
func MountCommandForward(r chi.Router, hubAPI string, timeout time.Duration, logger *slog.Logger) {
	var handle http.HandlerFunc
	if hubAPI == "" {
		handle = func(w http.ResponseWriter, req *http.Request) {
			httpx.WriteProblem(w, req, httpx.CodeHubUnreachable, "this edge node forwards no commands (HUB_API_URL is not set); send them to the hub")
		}
	} else {
		target, _ := url.Parse(hubAPI)
		handle = (&httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.SetXForwarded()
			},
			Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
				TLSHandshakeTimeout:   3 * time.Second,
				ResponseHeaderTimeout: timeout + 5*time.Second,
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
