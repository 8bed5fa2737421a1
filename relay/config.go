package relay

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Mode selects how the relay reads the outbox.
type Mode string

const (
	// ModeCDC reads the outbox from the WAL through a logical replication
	// slot. It needs wal_level=logical.
	ModeCDC Mode = "cdc"
	// ModePoll queries the outbox table; for databases without logical
	// decoding.
	ModePoll Mode = "poll"
)

// Defaults for Config.
const (
	DefaultSlotName           = "jetcqrs_outbox"
	DefaultPublicationName    = "jetcqrs_outbox"
	DefaultStatusInterval     = time.Second
	DefaultHeartbeatInterval  = 10 * time.Second
	DefaultLeaderPollInterval = time.Second
	DefaultDeadPeerTimeout    = 10 * time.Second
	DefaultPollInterval       = time.Second
	DefaultBatchSize          = 4096
	DefaultDrainTimeout       = 10 * time.Second
	DefaultLedgerInterval     = time.Minute
)

// Config configures a Relay. Zero fields take the defaults above.
type Config struct {
	// DatabaseURL is the write store's PostgreSQL URL. Settings PostgreSQL
	// accepts at connection start may be appended as query parameters, e.g.
	// logical_decoding_work_mem=64kB, which decides when the server starts
	// streaming a large transaction before its commit.
	DatabaseURL string
	// Mode is ModeCDC (default) or ModePoll.
	Mode Mode
	// SlotName is the logical replication slot (CDC). Slot names are global
	// to the PostgreSQL cluster: lowercase letters, digits and underscores,
	// at most 63 characters. Default jetcqrs_outbox.
	SlotName string
	// PublicationName is the publication on outbox_events (CDC). Default
	// jetcqrs_outbox.
	PublicationName string
	// StatusInterval is how often the confirmed position is reported to the
	// server and the slot lag is sampled. Default 1s.
	StatusInterval time.Duration
	// HeartbeatInterval is how often the active CDC relay writes a heartbeat
	// message into the WAL, so that the slot's confirmed position advances
	// (and WAL is released) even when no outbox row is written. Default 10s.
	HeartbeatInterval time.Duration
	// LeaderLockKey is the advisory lock that elects the active relay. Zero
	// derives it from SlotName, so relays of one slot (in either mode)
	// exclude each other.
	LeaderLockKey int64
	// LeaderPollInterval is how often a standby tries to take the lead and
	// the leader checks that its lock session is alive. Default 1s.
	LeaderPollInterval time.Duration
	// DeadPeerTimeout is how long PostgreSQL waits on a silent relay
	// (wal_sender_timeout and TCP keepalives of the lock session) before it
	// ends the session, releasing the slot and the lock to a standby after a
	// host or network failure. A crashed process is noticed at once; this
	// bounds the takeover when nobody closes the socket. Default 10s.
	DeadPeerTimeout time.Duration
	// PollInterval is the polling relay's fallback period when no
	// notification arrives. Default 1s.
	PollInterval time.Duration
	// BatchSize is the most events handed to one PublishBatch call; larger
	// transactions are published in several calls. Default 4096.
	BatchSize int
	// MaxPendingEvents bounds the events decoded but not yet handed to the
	// publisher; the relay stops reading the WAL while it is reached. A
	// single transaction larger than the bound is still buffered whole (it
	// cannot be published before its commit). Default 4 × BatchSize.
	MaxPendingEvents int
	// DrainTimeout bounds how long Run waits for in-flight publishes after
	// its context ends. Default 10s.
	DrainTimeout time.Duration
	// LedgerInterval is how often the CDC relay marks the outbox rows of
	// the events it appended since the last time, reading their ids back
	// from the stream. The CDC relay does not mark as it publishes; only
	// marked rows can be pruned. Default 1m.
	LedgerInterval time.Duration
	// Logger receives the relay's logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the relay's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
}

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeCDC
	}
	if c.SlotName == "" {
		c.SlotName = DefaultSlotName
	}
	if c.PublicationName == "" {
		c.PublicationName = DefaultPublicationName
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.LeaderLockKey == 0 {
		h := fnv.New64a()
		h.Write([]byte("jetcqrs.relay:" + c.SlotName))
		c.LeaderLockKey = int64(h.Sum64())
	}
	if c.LeaderPollInterval == 0 {
		c.LeaderPollInterval = DefaultLeaderPollInterval
	}
	if c.DeadPeerTimeout == 0 {
		c.DeadPeerTimeout = DefaultDeadPeerTimeout
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxPendingEvents == 0 {
		c.MaxPendingEvents = 4 * c.BatchSize
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.LedgerInterval == 0 {
		c.LedgerInterval = DefaultLedgerInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.DatabaseURL == "" {
		return errors.New("relay: Config.DatabaseURL is required")
	}
	if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
		return fmt.Errorf("relay: Config.DatabaseURL: %w", err)
	}
	switch c.Mode {
	case ModeCDC, ModePoll:
	default:
		return fmt.Errorf("relay: Config.Mode %q: want %q or %q", c.Mode, ModeCDC, ModePoll)
	}
	if !slotNameRE.MatchString(c.SlotName) {
		return fmt.Errorf("relay: Config.SlotName %q: want 1-63 lowercase letters, digits or underscores", c.SlotName)
	}
	if c.PublicationName == "" || len(c.PublicationName) > 63 {
		return fmt.Errorf("relay: Config.PublicationName %q: want 1-63 characters", c.PublicationName)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"StatusInterval", c.StatusInterval},
		{"HeartbeatInterval", c.HeartbeatInterval},
		{"LeaderPollInterval", c.LeaderPollInterval},
		{"DeadPeerTimeout", c.DeadPeerTimeout},
		{"PollInterval", c.PollInterval},
		{"DrainTimeout", c.DrainTimeout},
		{"LedgerInterval", c.LedgerInterval},
	} {
		if d.v < 0 {
			return fmt.Errorf("relay: Config.%s %s is negative", d.name, d.v)
		}
	}
	if c.DeadPeerTimeout < time.Second {
		return fmt.Errorf("relay: Config.DeadPeerTimeout %s: want at least 1s", c.DeadPeerTimeout)
	}
	if c.StatusInterval*2 > c.DeadPeerTimeout {
		// The server ends a walsender that has not heard from its client for
		// DeadPeerTimeout; status updates are what it hears.
		return fmt.Errorf("relay: Config.StatusInterval %s: want at most half of DeadPeerTimeout (%s)",
			c.StatusInterval, c.DeadPeerTimeout)
	}
	if c.BatchSize < 1 {
		return fmt.Errorf("relay: Config.BatchSize %d: want >= 1", c.BatchSize)
	}
	if c.MaxPendingEvents < c.BatchSize {
		return fmt.Errorf("relay: Config.MaxPendingEvents %d: want >= BatchSize (%d)", c.MaxPendingEvents, c.BatchSize)
	}
	return nil
}
