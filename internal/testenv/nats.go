package testenv

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// JetStream is an embedded nats-server with the EVENTS and DLQ streams, for
// one test: its own random port, store directory and password, shut down at
// cleanup.
type JetStream struct {
	Server *jnats.Server
	Conn   *natsgo.Conn
	JS     jetstream.JetStream
	Stream jnats.StreamConfig
}

// NATS starts an embedded nats-server with JetStream and provisions the
// EVENTS stream with partitions partitions and the DLQ stream.
func NATS(t testing.TB, partitions int) *JetStream {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// With a password, as the binary runs it: the Conn and ClientURL carry it.
	dir := t.TempDir()
	srv, err := jnats.StartEmbedded(jnats.ServerConfig{Port: jnats.RandomPort, StoreDir: dir,
		PasswordFile: filepath.Join(dir, "password")}, logger)
	if err != nil {
		t.Fatalf("start embedded nats-server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := jnats.Connect(ctx, srv.ClientURL(), t.Name(), logger)
	if err != nil {
		t.Fatalf("connect to embedded nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := jnats.StreamConfig{Partitions: partitions}
	if _, err := jnats.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("provision EVENTS: %v", err)
	}
	if _, err := jnats.EnsureDeadLetterStream(ctx, js, jnats.DeadLetterConfig{}); err != nil {
		t.Fatalf("provision DLQ: %v", err)
	}
	return &JetStream{Server: srv, Conn: nc, JS: js, Stream: cfg}
}
