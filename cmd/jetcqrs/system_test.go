package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// system is the whole binary running in the test process against the real
// services: its own database, Redis prefix, ClickHouse database, embedded
// NATS and replication slot.
type system struct {
	t      *testing.T
	cfg    *Config
	main   *Main
	base   string
	pool   *pgxpool.Pool
	tokens *auth.Tokens
	cancel context.CancelFunc
	done   chan error
}

func testConfig(t *testing.T) *Config {
	t.Helper()
	cfg := &Config{}
	cmd := newRootCmd()
	cfg.bind(cmd.Flags())
	_ = cmd.Flags().Parse(nil)
	cfg.DatabaseURL = testenv.PostgresURL(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NATSPort = -1
	cfg.SlotName = "jetcqrs_t" + strings.ToLower(rand.Text()[:12])
	redisURL, prefix := testenv.RedisURL(t)
	cfg.RedisURL, cfg.RedisPrefix = redisURL, prefix
	chAddr, chDB := testenv.ClickHouseAddr(t)
	cfg.ClickHouseURL = "clickhouse://" + chAddr + "/" + chDB
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startSystem runs the components of comp with cfg until the test ends.
func startSystem(t *testing.T, cfg *Config, comp Components) *system {
	t.Helper()
	testenv.RequireLogicalWAL(t)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := NewMain(ctx, cfg, comp, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatalf("start system: %v", err)
	}
	s := &system{t: t, cfg: cfg, main: m, base: "http://" + m.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- m.Run(ctx) }()
	t.Cleanup(s.stop)
	secret, err := cfg.Secret()
	if err != nil {
		t.Fatal(err)
	}
	if s.tokens, err = auth.New(secret); err != nil {
		t.Fatal(err)
	}
	if s.pool, err = pgxpool.New(context.Background(), cfg.DatabaseURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)
	return s
}

func (s *system) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("system stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Error("system did not stop within 30s")
	}
	s.main.Close()
	s.cancel = nil
}

func (s *system) token(sub string, role domain.Role) string {
	tok, err := s.tokens.Issue(sub, role, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (s *system) do(method, path, token string, body any, header map[string]string, out any) (*http.Response, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp, raw
}

// streamEvents reads the whole EVENTS stream in order.
func (s *system) streamEvents(ctx context.Context) []jetstream.RawStreamMsg {
	s.t.Helper()
	stream, err := s.main.js.Stream(ctx, jnats.DefaultStreamName)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			s.t.Fatalf("get stream seq %d: %v", seq, err)
		}
		out = append(out, *m)
	}
	return out
}

// streamCount is how many events the EVENTS stream holds.
func (s *system) streamCount() uint64 {
	stream, err := s.main.js.Stream(context.Background(), jnats.DefaultStreamName)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Msgs
}
