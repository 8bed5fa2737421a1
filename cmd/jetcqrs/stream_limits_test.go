package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// TestServeRefusesAnEventStreamWithLimits points serve at a NATS server
// whose EVENTS stream drops events older than a day: it must refuse to
// start, since read models are rebuilt from the whole stream.
func TestServeRefusesAnEventStreamWithLimits(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := jnats.StartEmbedded(jnats.ServerConfig{Port: jnats.RandomPort, StoreDir: t.TempDir()}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := jnats.Connect(ctx, srv.ClientURL(), t.Name(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: jnats.DefaultStreamName, Subjects: []string{"events.>"},
		Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour,
		Metadata: map[string]string{jnats.PartitionsMetadataKey: "16"}}); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.NATSURL = srv.ClientURL()
	m, err := NewMain(ctx, cfg, All, logger)
	if err == nil {
		m.Close()
		t.Fatal("serve started against an EVENTS stream with a max age")
	}
	if !errors.Is(err, jnats.ErrStreamLimits) {
		t.Fatalf("NewMain = %v, want ErrStreamLimits", err)
	}
}
