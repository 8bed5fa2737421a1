package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// MinServerVersion is the oldest nats-server jetcqrs runs against: priority
// groups (one pinned worker per projection partition) and multi-filter
// consumers arrived in 2.11.
const MinServerVersion = "2.11.0"

// ErrServerTooOld is returned by RequireServerVersion when the connected
// server predates the required version.
var ErrServerTooOld = errors.New("nats: server too old")

// Reconnect backoff: doubles from reconnectBackoffMin up to
// reconnectBackoffMax, plus up to 20% jitter so a fleet does not reconnect
// in lockstep after a server restart.
const (
	reconnectBackoffMin = 50 * time.Millisecond
	reconnectBackoffMax = 2 * time.Second
	connectAttemptMax   = 2 * time.Second
)

// Connect dials url and keeps the connection alive for the life of the
// process: it reconnects forever with capped exponential backoff and logs
// disconnects, reconnects and asynchronous errors through logger.
//
// Nothing is buffered while disconnected (ReconnectBufSize -1): a publish
// during a disconnect fails immediately instead of being queued in client
// memory and possibly lost, so publishers see the failure and retry
// themselves. Pending JetStream publish acks fail with ErrDisconnected.
//
// The initial connection is retried while the server refuses connections,
// until ctx ends; other errors (bad URL, authentication) return at once.
// extra are added to the options above: Credentials.Options for a server
// that wants credentials besides those a URL can carry.
func Connect(ctx context.Context, url, name string, logger *slog.Logger, extra ...natsgo.Option) (*natsgo.Conn, error) {
	logger = logger.With("component", "nats", "client", name)
	opts := []natsgo.Option{
		natsgo.Name(name),
		natsgo.MaxReconnects(-1),
		natsgo.CustomReconnectDelay(reconnectDelay),
		natsgo.ReconnectBufSize(-1),
		// Detect a dead peer (no TCP reset) in about a minute instead of
		// the default four.
		natsgo.PingInterval(20 * time.Second),
		natsgo.MaxPingsOutstanding(3),
		natsgo.DisconnectErrHandler(func(nc *natsgo.Conn, err error) {
			if err == nil { // Close or Drain by this process
				logger.Debug("nats disconnected")
				return
			}
			logger.Warn("nats disconnected", "err", err)
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(),
				"server", nc.ConnectedServerName(), "version", nc.ConnectedServerVersion())
		}),
		natsgo.ClosedHandler(func(nc *natsgo.Conn) {
			if err := nc.LastError(); err != nil {
				logger.Warn("nats connection closed", "err", err)
				return
			}
			logger.Info("nats connection closed")
		}),
		natsgo.ErrorHandler(func(nc *natsgo.Conn, sub *natsgo.Subscription, err error) {
			if sub != nil {
				logger.Error("nats async error", "subject", sub.Subject, "err", err)
				return
			}
			logger.Error("nats async error", "err", err)
		}),
	}
	opts = append(opts, extra...)

	for attempt := 1; ; attempt++ {
		timeout := connectAttemptMax
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		if timeout <= 0 {
			// The deadline passed; ctx.Err may still be nil until its timer fires.
			return nil, fmt.Errorf("nats: connect %s: %w", redactURL(url), context.DeadlineExceeded)
		}
		nc, err := natsgo.Connect(url, append(opts, natsgo.Timeout(timeout))...)
		if err == nil {
			logger.Info("nats connected", "url", nc.ConnectedUrlRedacted(),
				"server", nc.ConnectedServerName(), "version", nc.ConnectedServerVersion())
			return nc, nil
		}
		if !retryableConnectErr(err) {
			return nil, fmt.Errorf("nats: connect %s: %w", redactURL(url), err)
		}
		delay := reconnectDelay(attempt)
		logger.Warn("nats server not reachable, retrying", "url", redactURL(url), "attempt", attempt,
			"retry_in", delay, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("nats: connect %s: %w (last error: %v)", redactURL(url), ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// retryableConnectErr reports whether a failed first connect may succeed
// later: the server is down, still starting, or slow to answer.
func retryableConnectErr(err error) bool {
	var ne net.Error
	return errors.Is(err, natsgo.ErrNoServers) || errors.Is(err, natsgo.ErrTimeout) ||
		(errors.As(err, &ne) && ne.Timeout())
}

func reconnectDelay(attempt int) time.Duration {
	d := reconnectBackoffMax
	if attempt < 16 {
		d = min(reconnectBackoffMin<<max(attempt-1, 0), reconnectBackoffMax)
	}
	return d + rand.N(d/5+1)
}

// redactURL hides a password in a URL list before it is logged.
func redactURL(url string) string {
	parts := strings.Split(url, ",")
	for i, p := range parts {
		at := strings.LastIndex(p, "@")
		scheme := strings.Index(p, "://")
		if at < 0 || scheme < 0 || at < scheme {
			continue
		}
		userinfo := p[scheme+3 : at]
		if user, _, ok := strings.Cut(userinfo, ":"); ok {
			parts[i] = p[:scheme+3] + user + ":xxxxx" + p[at:]
		}
	}
	return strings.Join(parts, ",")
}

// RequireServerVersion returns nil when the server nc is connected to runs
// at least version minVersion (e.g. MinServerVersion), and otherwise an
// error wrapping ErrServerTooOld that says why the version matters and how
// to fix it. Pre-release suffixes are ignored, as nats.go itself does.
func RequireServerVersion(nc *natsgo.Conn, minVersion string) error {
	have := nc.ConnectedServerVersion()
	if have == "" {
		return fmt.Errorf("nats: cannot check the server version: %w", natsgo.ErrConnectionClosed)
	}
	ok, err := versionAtLeast(have, minVersion)
	if err != nil {
		return fmt.Errorf("nats: check server version: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: nats-server %s at %s is older than %s, which jetcqrs requires "+
			"(JetStream priority groups keep one pinned worker per projection partition, and projections use "+
			"multi-filter consumers; both need nats-server >= 2.11). Fix: unset NATS_URL to use the nats-server "+
			"embedded in jetcqrs, or upgrade that server to %s or later",
			ErrServerTooOld, have, nc.ConnectedUrlRedacted(), minVersion, minVersion)
	}
	return nil
}

// versionAtLeast compares the numeric major.minor.patch of two versions
// ("v" prefix and "-suffix" allowed, missing minor/patch read as 0).
func versionAtLeast(have, want string) (bool, error) {
	h, err := parseVersion(have)
	if err != nil {
		return false, err
	}
	w, err := parseVersion(want)
	if err != nil {
		return false, err
	}
	for i := range h {
		if h[i] != w[i] {
			return h[i] > w[i], nil
		}
	}
	return true, nil
}

func parseVersion(v string) ([3]int, error) {
	var out [3]int
	core := strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(core, "-+"); i >= 0 {
		core = core[:i]
	}
	parts := strings.Split(core, ".")
	if core == "" || len(parts) > 3 {
		return out, fmt.Errorf("invalid version %q", v)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || strings.HasPrefix(p, "+") {
			return out, fmt.Errorf("invalid version %q", v)
		}
		out[i] = n
	}
	return out, nil
}
