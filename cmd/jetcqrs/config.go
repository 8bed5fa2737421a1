package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/internal/telemetry"
)

// Config is everything the binary reads from flags and the environment. Every
// field has a default that works on a development machine; Validate names the
// field that is wrong.
type Config struct {
	DatabaseURL string
	DBMaxConns  int32
	RedisURL    string
	RedisPrefix string
	NATSURL     string
	NATSPort    int
	// NATSReplicas is the replica count of the streams and the bucket
	// jetcqrs creates; 0 picks it from the server (jnats.ClusterReplicas).
	NATSReplicas   int
	DataDir        string
	JWTSecret      string
	HTTPAddr       string
	CommandTimeout time.Duration
	ShutdownGrace  time.Duration
	LogLevel       string
	LogFormat      string

	RelayMode        string
	SlotName         string
	Partitions       int
	DuplicateWindow  time.Duration
	ClickHouseURL    string
	ElasticsearchURL string
	ConsistencyWait  time.Duration

	// NATSCreds … NATSKey authenticate to an external server (NATS_URL).
	NATSCreds, NATSNKey, NATSUser, NATSPassword, NATSToken string
	NATSCA, NATSCert, NATSKey                              string
	// MetricsAddr, when set, serves /metrics there instead of on HTTPAddr.
	MetricsAddr string
	// Edge mode (a read node at another site): the embedded server joins
	// the hub at NATSHubURL as a leaf node, in JetStream domain NATSDomain,
	// and mirrors EVENTS from the hub's domain NATSHubDomain; commands go
	// to the hub's command API at HubAPIURL.
	NATSHubURL, NATSHubCreds, NATSDomain, NATSHubDomain, HubAPIURL string
	// NATSLeafAddr makes the embedded server a hub edges join as leaf
	// nodes (with NATSDomain naming the hub's domain).
	NATSLeafAddr string
	// Tracing chooses the trace exporter (OTEL_TRACES_EXPORTER and the
	// OTLP protocol); the SDK reads the other OTEL_* variables itself.
	Tracing telemetry.Config
}

// envNames maps each flag to its environment variable; every flag has one.
var envNames = map[string]string{
	"database-url":      "DATABASE_URL",
	"db-max-conns":      "DB_MAX_CONNS",
	"redis-url":         "REDIS_URL",
	"redis-prefix":      "REDIS_PREFIX",
	"nats-url":          "NATS_URL",
	"nats-port":         "NATS_PORT",
	"nats-replicas":     "NATS_REPLICAS",
	"nats-creds":        "NATS_CREDS",
	"nats-nkey":         "NATS_NKEY",
	"nats-user":         "NATS_USER",
	"nats-password":     "NATS_PASSWORD",
	"nats-token":        "NATS_TOKEN",
	"nats-ca":           "NATS_CA",
	"nats-cert":         "NATS_CERT",
	"nats-key":          "NATS_KEY",
	"metrics-addr":      "METRICS_ADDR",
	"data-dir":          "DATA_DIR",
	"jwt-secret":        "JWT_SECRET",
	"http-addr":         "HTTP_ADDR",
	"command-timeout":   "COMMAND_TIMEOUT",
	"shutdown-grace":    "SHUTDOWN_GRACE",
	"log-level":         "LOG_LEVEL",
	"log-format":        "LOG_FORMAT",
	"relay-mode":        "RELAY_MODE",
	"slot-name":         "SLOT_NAME",
	"partitions":        "PARTITIONS",
	"duplicate-window":  "DUPLICATE_WINDOW",
	"clickhouse-url":    "CLICKHOUSE_URL",
	"elasticsearch-url": "ELASTICSEARCH_URL",
	"consistency-wait":  "CONSISTENCY_WAIT",
	"nats-hub-url":      "NATS_HUB_URL",
	"nats-hub-creds":    "NATS_HUB_CREDS",
	"nats-domain":       "NATS_DOMAIN",
	"nats-hub-domain":   "NATS_HUB_DOMAIN",
	"hub-api-url":       "HUB_API_URL",
	"nats-leaf-addr":    "NATS_LEAF_ADDR",
}

func (c *Config) bind(fs *pflag.FlagSet) {
	fs.StringVar(&c.DatabaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/jetcqrs?sslmode=disable", "PostgreSQL write store")
	fs.Int32Var(&c.DBMaxConns, "db-max-conns", 20, "PostgreSQL pool size")
	fs.StringVar(&c.RedisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis read store")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", "jetcqrs:", "prefix of every read-model key in Redis")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS server or cluster (≥ 2.11; several URLs comma-separated); empty runs an embedded one")
	fs.IntVar(&c.NATSPort, "nats-port", 4223, "port of the embedded NATS server (loopback)")
	fs.IntVar(&c.NATSReplicas, "nats-replicas", 0, "replicas of the streams and bucket jetcqrs creates (1-5); 0: 3 on a cluster, else 1")
	c.bindNATSCredentials(fs)
	fs.StringVar(&c.DataDir, "data-dir", "data", "directory for the embedded NATS store, the search index and the generated JWT secret")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "", "HS256 secret (≥ 32 bytes); empty uses DATA_DIR/jwt-secret, generated on first use")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "listen address of /metrics alone; empty serves it on http-addr")
	fs.DurationVar(&c.CommandTimeout, "command-timeout", 10*time.Second, "time limit of one command")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 15*time.Second, "time allowed to drain on SIGINT/SIGTERM")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.RelayMode, "relay-mode", "cdc", "cdc (logical replication) or poll (for databases without it)")
	fs.StringVar(&c.SlotName, "slot-name", "jetcqrs_outbox", "logical replication slot and publication of the relay")
	fs.IntVar(&c.Partitions, "partitions", 16, "partitions of the EVENTS stream (fixed when the stream is created)")
	fs.DurationVar(&c.DuplicateWindow, "duplicate-window", 2*time.Minute, "how long JetStream drops re-published event ids")
	fs.StringVar(&c.ClickHouseURL, "clickhouse-url", "clickhouse://127.0.0.1:9000/default", "ClickHouse (native protocol) for sales analytics")
	fs.StringVar(&c.ElasticsearchURL, "elasticsearch-url", "", "Elasticsearch for the catalog; empty uses the embedded Bleve index in DATA_DIR")
	fs.DurationVar(&c.ConsistencyWait, "consistency-wait", 2*time.Second, "how long a GET with X-Consistency-Token waits for the read model")
	c.bindEdge(fs)
}

// applyEnv sets every flag not given on the command line from its
// environment variable, so flags win over the environment.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		env, ok := envNames[f.Name]
		if !ok || f.Changed {
			return
		}
		if v, set := os.LookupEnv(env); set {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("config: %s (from $%s): %w", f.Name, env, err))
			}
		}
	})
	return errors.Join(errs...)
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if err := c.Tracing.Validate(); err != nil {
		return err
	}
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return fmt.Errorf("config: database-url ($DATABASE_URL) must be a postgres:// URL, got %q", c.DatabaseURL)
	}
	if c.DBMaxConns < 1 || c.DBMaxConns > 1000 {
		return fmt.Errorf("config: db-max-conns ($DB_MAX_CONNS) must be 1..1000, got %d", c.DBMaxConns)
	}
	if u, err := url.Parse(c.RedisURL); c.RedisURL != engineNone && (err != nil || (u.Scheme != "redis" && u.Scheme != "rediss")) {
		return fmt.Errorf("config: redis-url ($REDIS_URL) must be a redis:// URL or none (a read node keeps orders and inventory itself), got %q", c.RedisURL)
	}
	if c.RedisPrefix == "" || len(c.RedisPrefix) > 64 || strings.ContainsAny(c.RedisPrefix, " \t\r\n{}") {
		return fmt.Errorf("config: redis-prefix ($REDIS_PREFIX) must be 1..64 characters without spaces or braces, got %q", c.RedisPrefix)
	}
	if c.NATSURL != "" {
		for _, u := range strings.Split(c.NATSURL, ",") {
			if u = strings.TrimSpace(u); !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
				// The URL may carry a password: name its scheme only.
				scheme, _, _ := strings.Cut(u, "://")
				return fmt.Errorf("config: nats-url ($NATS_URL) must be nats:// or tls:// URLs, comma-separated; one starts %q", scheme)
			}
		}
	}
	if c.NATSReplicas < 0 || c.NATSReplicas > 5 {
		return fmt.Errorf("config: nats-replicas ($NATS_REPLICAS) must be 1..5, or 0 to pick by the server, got %d", c.NATSReplicas)
	}
	if c.NATSReplicas > 1 && c.NATSURL == "" {
		return fmt.Errorf("config: nats-replicas ($NATS_REPLICAS) %d needs a NATS cluster in nats-url ($NATS_URL); the embedded server is one node", c.NATSReplicas)
	}
	if c.NATSPort < -1 || c.NATSPort > 65535 {
		return fmt.Errorf("config: nats-port ($NATS_PORT) must be a port number, got %d", c.NATSPort)
	}
	if err := c.natsCredentials().Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.DataDir == "" {
		return errors.New("config: data-dir ($DATA_DIR) must not be empty")
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < auth.MinSecretLen {
		return fmt.Errorf("config: jwt-secret ($JWT_SECRET) must be at least %d bytes, got %d", auth.MinSecretLen, len(c.JWTSecret))
	}
	if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("config: http-addr ($HTTP_ADDR) must be host:port, got %q", c.HTTPAddr)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("config: http-addr ($HTTP_ADDR) has a bad port %q", port)
	}
	if err := validateMetricsAddr(c.MetricsAddr, c.HTTPAddr); err != nil {
		return err
	}
	if c.CommandTimeout <= 0 {
		return fmt.Errorf("config: command-timeout ($COMMAND_TIMEOUT) must be positive, got %s", c.CommandTimeout)
	}
	if c.ShutdownGrace <= 0 {
		return fmt.Errorf("config: shutdown-grace ($SHUTDOWN_GRACE) must be positive, got %s", c.ShutdownGrace)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log-level ($LOG_LEVEL) must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("config: log-format ($LOG_FORMAT) must be text or json, got %q", c.LogFormat)
	}
	if c.RelayMode != "cdc" && c.RelayMode != "poll" {
		return fmt.Errorf("config: relay-mode ($RELAY_MODE) must be cdc or poll, got %q", c.RelayMode)
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		return fmt.Errorf("config: partitions ($PARTITIONS) must be 1..1024, got %d", c.Partitions)
	}
	if c.DuplicateWindow < time.Second {
		return fmt.Errorf("config: duplicate-window ($DUPLICATE_WINDOW) must be at least 1s, got %s", c.DuplicateWindow)
	}
	if u, err := url.Parse(c.ClickHouseURL); c.ClickHouseURL != engineNone && (err != nil || u.Scheme != "clickhouse" || u.Host == "") {
		return fmt.Errorf("config: clickhouse-url ($CLICKHOUSE_URL) must be clickhouse://host:port/database or none (a read node keeps sales itself), got %q", c.ClickHouseURL)
	}
	if c.ElasticsearchURL != "" {
		if u, err := url.Parse(c.ElasticsearchURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: elasticsearch-url ($ELASTICSEARCH_URL) must be an http(s) URL, got %q", c.ElasticsearchURL)
		}
	}
	if c.ConsistencyWait <= 0 || c.ConsistencyWait > time.Minute {
		return fmt.Errorf("config: consistency-wait ($CONSISTENCY_WAIT) must be in (0, 1m], got %s", c.ConsistencyWait)
	}
	return c.validateEdge()
}

// Secret returns the JWT secret: the configured one, or the one kept in
// DATA_DIR/jwt-secret, created with 256 random bits on first use so that a
// development machine never runs with a guessable secret.
func (c *Config) Secret() ([]byte, error) {
	if c.JWTSecret != "" {
		return []byte(c.JWTSecret), nil
	}
	path := filepath.Join(c.DataDir, "jwt-secret")
	if b, err := os.ReadFile(path); err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < auth.MinSecretLen {
			return nil, fmt.Errorf("config: %s holds a secret shorter than %d bytes", path, auth.MinSecretLen)
		}
		return []byte(s), nil
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("config: data-dir: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	secret := hex.EncodeToString(raw)
	tmp, err := os.CreateTemp(c.DataDir, ".jwt-secret-*")
	if err != nil {
		return nil, fmt.Errorf("config: data-dir: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	// Link publishes the complete file atomically and fails if another
	// process published one first; then that one wins.
	if err := os.Link(tmp.Name(), path); err != nil {
		if os.IsExist(err) {
			return c.Secret()
		}
		return nil, fmt.Errorf("config: create %s: %w", path, err)
	}
	return []byte(secret), nil
}
