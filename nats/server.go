package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
)

// Defaults for ServerConfig.
const (
	DefaultServerHost = "127.0.0.1"
	// DefaultServerPort is 4223 rather than NATS's usual 4222 so that the
	// embedded server does not collide with a system nats-server that is
	// commonly already bound to 4222 (and often too old for jetcqrs).
	DefaultServerPort   = 4223
	DefaultServerName   = "jetcqrs"
	DefaultReadyTimeout = 10 * time.Second
)

// RandomPort asks the embedded server to listen on a free port chosen by
// the kernel; read it back with (*Server).ClientURL.
const RandomPort = -1

// ServerConfig configures the embedded nats-server. The zero value of
// every field except StoreDir means "use the default".
type ServerConfig struct {
	// Host is the address the client listener binds to. Default 127.0.0.1,
	// so the server is reachable by the nats CLI on this machine only.
	Host string
	// Port is the client port. 0 means DefaultServerPort (4223);
	// RandomPort (-1) picks a free port.
	Port int
	// StoreDir is the directory JetStream keeps its file storage in.
	// Required; the data survives restarts of the server.
	StoreDir string
	// PasswordFile keeps the password of EmbeddedUser, which the server
	// then admits alone: a local process without it can neither publish
	// events nor edit the read-model generations. Created with a random
	// password (mode 0600) when missing. Empty admits every client, for
	// tests that reach the server by its port alone; the jetcqrs binary
	// always sets it.
	PasswordFile string
	// Name is the server name, stable across restarts. Default "jetcqrs".
	Name string
	// MaxStore caps the disk JetStream may use, in bytes. 0 leaves the
	// server's default (a share of the free space of StoreDir's disk).
	MaxStore int64
	// ReadyTimeout bounds how long StartEmbedded waits for the server to
	// accept connections. Default 10s.
	ReadyTimeout time.Duration
	// Domain is the server's JetStream domain; an edge's server has one of
	// its own, apart from its hub's (see Hub).
	Domain string
	// Hub, when set, joins the server to a hub as a leaf node (an edge).
	Hub *LeafRemote
	// LeafAddr, when set (host:port), makes the server a hub: edges' servers
	// join it there as leaf nodes, authenticating as the clients do.
	LeafAddr string
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.Host == "" {
		c.Host = DefaultServerHost
	}
	if c.Port == 0 {
		c.Port = DefaultServerPort
	}
	if c.Name == "" {
		c.Name = DefaultServerName
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	return c
}

// Validate reports the first invalid field, after defaults are applied.
func (c ServerConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.StoreDir == "":
		return errors.New("nats: ServerConfig.StoreDir is required (JetStream file storage lives there)")
	case c.Port < RandomPort || c.Port > 65535:
		return fmt.Errorf("nats: ServerConfig.Port %d out of range (1-65535, 0 for %d, -1 for random)", c.Port, DefaultServerPort)
	case c.MaxStore < 0:
		return fmt.Errorf("nats: ServerConfig.MaxStore %d is negative", c.MaxStore)
	case c.ReadyTimeout < 0:
		return fmt.Errorf("nats: ServerConfig.ReadyTimeout %s is negative", c.ReadyTimeout)
	}
	if net.ParseIP(c.Host) == nil && !validHostname(c.Host) {
		return fmt.Errorf("nats: ServerConfig.Host %q is neither an IP address nor a host name", c.Host)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// Server is a nats-server running in this process with JetStream enabled.
type Server struct {
	ns       *natsserver.Server
	password string
}

// StartEmbedded starts nats-server in-process with JetStream on file storage
// in cfg.StoreDir and waits, up to cfg.ReadyTimeout, until it accepts client
// connections. With cfg.PasswordFile it admits EmbeddedUser with that
// password only. Server logs go to logger. On error nothing is left running.
func StartEmbedded(cfg ServerConfig, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var users []*natsserver.User
	var password string
	if cfg.PasswordFile != "" {
		var err error
		if password, err = loadOrCreatePassword(cfg.PasswordFile); err != nil {
			return nil, err
		}
		// The server keeps a bcrypt hash rather than the password. The
		// lowest cost is enough for 256 random bits, and keeps each CONNECT
		// cheap.
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			return nil, fmt.Errorf("nats: hash the password: %w", err)
		}
		users = []*natsserver.User{{Username: EmbeddedUser, Password: string(hash)}}
	}

	opts := &natsserver.Options{
		ServerName:             cfg.Name,
		Host:                   cfg.Host,
		Port:                   cfg.Port,
		JetStream:              true,
		StoreDir:               cfg.StoreDir,
		JetStreamMaxStore:      cfg.MaxStore,
		NoSigs:                 true, // signals belong to the binary, not the library
		DisableJetStreamBanner: true,
		// The JetStream API, the KV buckets and events.> are all in the
		// global account this user belongs to; with a user configured, an
		// unauthenticated client is refused at CONNECT.
		Users:           users,
		JetStreamDomain: cfg.Domain,
	}
	if cfg.Hub != nil {
		remote, err := cfg.Hub.options()
		if err != nil {
			return nil, err
		}
		opts.LeafNode.Remotes = []*natsserver.RemoteLeafOpts{remote}
	}
	if cfg.LeafAddr != "" {
		host, port, err := net.SplitHostPort(cfg.LeafAddr)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("nats: ServerConfig.LeafAddr %q is not host:port", cfg.LeafAddr)
		}
		opts.LeafNode.Host, opts.LeafNode.Port = host, p
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: configure embedded server: %w", err)
	}
	sl := &serverLogger{logger: logger.With("component", "nats-server")}
	ns.SetLoggerV2(sl, logger.Enabled(context.Background(), slog.LevelDebug), false, false)

	// Start is synchronous up to opening the client listener, so a fatal
	// startup condition (port in use, unusable store) is known when it returns.
	ns.Start()
	fail := func(reason string) (*Server, error) {
		ns.Shutdown()
		ns.WaitForShutdown()
		if fatal := sl.lastFatal(); fatal != "" {
			reason = fatal
			if strings.Contains(fatal, "address already in use") {
				reason += "; another process holds the port, so configure a different one"
			}
		}
		return nil, fmt.Errorf("nats: embedded server on %s: %s",
			net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), reason)
	}
	if sl.lastFatal() != "" {
		return fail("")
	}
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		return fail(fmt.Sprintf("not accepting connections after %s", cfg.ReadyTimeout))
	}
	if !ns.JetStreamEnabled() {
		return fail("JetStream did not start")
	}
	logger.Info("embedded nats-server ready", "url", ns.ClientURL(), "store_dir", cfg.StoreDir,
		"password_file", cfg.PasswordFile, "version", natsserver.VERSION)
	return &Server{ns: ns, password: password}, nil
}

// ClientURL is the URL clients connect to, with the actual port when
// RandomPort was asked for and, with a PasswordFile, the credentials as its
// user information (nats://jetcqrs:PASSWORD@host:port): a secret, to be
// logged redacted.
func (s *Server) ClientURL() string {
	if s.password == "" {
		return s.ns.ClientURL()
	}
	// The password is hex, so it needs no escaping in the URL.
	return "nats://" + EmbeddedUser + ":" + s.password + "@" + strings.TrimPrefix(s.ns.ClientURL(), "nats://")
}

// Credentials are the user and password the server admits, for clients
// (and the nats CLI: --user, --password) that take them apart from the URL;
// zero without a PasswordFile.
func (s *Server) Credentials() Credentials {
	if s.password == "" {
		return Credentials{}
	}
	return Credentials{User: EmbeddedUser, Password: s.password}
}

// Shutdown stops the server, disconnecting its clients, and returns once
// shutdown is complete and the store is closed. Safe to call more than once.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// serverLogger adapts nats-server's printf logger to slog. The server calls
// Fatalf for conditions it cannot start with (e.g. a port already in use);
// an embedded server must not exit the process, so those are logged as
// errors and remembered for StartEmbedded's error message.
type serverLogger struct {
	logger *slog.Logger
	mu     sync.Mutex
	fatal  string
}

func (l *serverLogger) lastFatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (l *serverLogger) Noticef(format string, v ...any) { l.logger.Info(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.logger.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.logger.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.logger.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.logger.Debug(fmt.Sprintf(format, v...)) }

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	l.fatal = msg
	l.mu.Unlock()
	l.logger.Error(msg, "fatal", true)
}
