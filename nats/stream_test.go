package nats

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestStreamConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     StreamConfig
		wantErr string
	}{
		{"defaults", StreamConfig{}, ""},
		{"custom", StreamConfig{Name: "EVENTS_TEST", Subjects: []string{"events.>"}, Partitions: 64}, ""},
		{"dotted name", StreamConfig{Name: "EV.ENTS"}, "Name"},
		{"spaced name", StreamConfig{Name: "EV ENTS"}, "Name"},
		{"bad subject", StreamConfig{Subjects: []string{"events.>", "events..x"}}, "Subjects"},
		{"subjects miss events", StreamConfig{Subjects: []string{"orders.>"}}, "Subjects"},
		{"gt not last", StreamConfig{Subjects: []string{"events.>", "x.>.x"}}, "Subjects"},
		{"partitions negative", StreamConfig{Partitions: -1}, "Partitions"},
		{"partitions too many", StreamConfig{Partitions: MaxPartitions + 1}, "Partitions"},
		{"negative window", StreamConfig{DuplicateWindow: -time.Second}, "DuplicateWindow"},
		{"replicas", StreamConfig{Replicas: 7}, "Replicas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assertValidateErr(t, tt.cfg.Validate(), tt.wantErr)
		})
	}
}

func TestDeadLetterConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     DeadLetterConfig
		wantErr string
	}{
		{"defaults", DeadLetterConfig{}, ""},
		{"short max age below window", DeadLetterConfig{MaxAge: time.Minute}, "DuplicateWindow"},
		{"bad name", DeadLetterConfig{Name: "D*"}, "Name"},
		{"replicas", DeadLetterConfig{Replicas: -1}, "Replicas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assertValidateErr(t, tt.cfg.Validate(), tt.wantErr)
		})
	}
}

func assertValidateErr(t testing.TB, err error, wantField string) {
	t.Helper()
	if wantField == "" {
		if err != nil {
			t.Fatalf("Validate() = %v, want nil", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), wantField) {
		t.Fatalf("Validate() = %v, want an error naming %s", err, wantField)
	}
}

func TestEnsureStream(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)
	ctx := t.Context()

	s, err := EnsureStream(ctx, js, StreamConfig{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	info := s.CachedInfo()
	c := info.Config
	if c.Name != "EVENTS" || len(c.Subjects) != 1 || c.Subjects[0] != "events.>" || c.Storage != jetstream.FileStorage ||
		c.Duplicates != 2*time.Minute || c.Replicas != 1 || c.Metadata[PartitionsMetadataKey] != "16" {
		t.Fatalf("created stream config = %+v", c)
	}

	t.Run("idempotent", func(t *testing.T) {
		again, err := EnsureStream(ctx, js, StreamConfig{})
		if err != nil {
			t.Fatalf("second EnsureStream: %v", err)
		}
		if got := again.CachedInfo(); !got.Created.Equal(info.Created) || got.Config.Duplicates != c.Duplicates {
			t.Fatalf("second EnsureStream changed the stream: %+v", got)
		}
		// The server's normalized config must read as up to date, or every
		// start would issue a needless update.
		if _, changed := mergeMutable(again.CachedInfo().Config, StreamConfig{}.withDefaults().jetstream()); changed {
			t.Fatalf("stream as stored reads as needing an update: %+v", again.CachedInfo().Config)
		}
	})

	t.Run("updates duplicate window", func(t *testing.T) {
		upd, err := EnsureStream(ctx, js, StreamConfig{DuplicateWindow: 5 * time.Minute})
		if err != nil {
			t.Fatalf("EnsureStream with a new window: %v", err)
		}
		fresh, err := upd.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fresh.Config.Duplicates != 5*time.Minute {
			t.Fatalf("window %s, want 5m", fresh.Config.Duplicates)
		}
		if fresh.Config.Metadata[PartitionsMetadataKey] != "16" {
			t.Fatalf("update lost the partition metadata: %v", fresh.Config.Metadata)
		}
	})

	t.Run("refuses limits", func(t *testing.T) {
		s, err := js.Stream(ctx, "EVENTS")
		if err != nil {
			t.Fatal(err)
		}
		limited := s.CachedInfo().Config
		limited.MaxAge = 24 * time.Hour
		if _, err := js.UpdateStream(ctx, limited); err != nil {
			t.Fatal(err)
		}
		_, err = EnsureStream(ctx, js, StreamConfig{DuplicateWindow: 5 * time.Minute})
		if !errors.Is(err, ErrStreamLimits) || !strings.Contains(err.Error(), "max age 24h0m0s") {
			t.Fatalf("EnsureStream on a stream with a max age = %v, want ErrStreamLimits naming it", err)
		}
		limited.MaxAge = 0
		if _, err := js.UpdateStream(ctx, limited); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("refuses partition mismatch", func(t *testing.T) {
		_, err := EnsureStream(ctx, js, StreamConfig{Partitions: 32})
		if !errors.Is(err, ErrPartitionMismatch) {
			t.Fatalf("EnsureStream(32 partitions) = %v, want ErrPartitionMismatch", err)
		}
		var pm *PartitionMismatchError
		if !errors.As(err, &pm) || pm.Existing != 16 || pm.Configured != 32 || pm.Stream != "EVENTS" {
			t.Fatalf("error = %#v, want existing 16, configured 32", err)
		}
		if !strings.Contains(err.Error(), "16") || !strings.Contains(err.Error(), "32") {
			t.Fatalf("message %q does not name both counts", err)
		}
	})
}

func TestEnsureStreamWithoutPartitionMetadata(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)
	ctx := t.Context()

	// An empty stream someone created by hand is adopted.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	s, err := EnsureStream(ctx, js, StreamConfig{Partitions: 8})
	if err != nil {
		t.Fatalf("EnsureStream on an empty stream without metadata: %v", err)
	}
	if got := s.CachedInfo().Config.Metadata[PartitionsMetadataKey]; got != "8" {
		t.Fatalf("adopted stream metadata %s = %q, want 8", PartitionsMetadataKey, got)
	}

	// A non-empty one is not: its subjects' partitioning is unknown.
	if err := js.DeleteStream(ctx, "EVENTS"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "events.order.0.OrderPlaced", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	_, err = EnsureStream(ctx, js, StreamConfig{Partitions: 8})
	if err == nil || !strings.Contains(err.Error(), PartitionsMetadataKey) {
		t.Fatalf("EnsureStream on a non-empty stream without metadata = %v, want a refusal naming %s", err, PartitionsMetadataKey)
	}
}

func TestEnsureStreamRefusesMemoryStorage(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"},
		Storage: jetstream.MemoryStorage, Metadata: map[string]string{PartitionsMetadataKey: "16"}}); err != nil {
		t.Fatal(err)
	}
	_, err := EnsureStream(t.Context(), js, StreamConfig{})
	if err == nil || !strings.Contains(err.Error(), "Memory") {
		t.Fatalf("EnsureStream on a memory stream = %v, want a refusal", err)
	}
}

func TestEnsureDeadLetterStream(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)

	s, err := EnsureDeadLetterStream(t.Context(), js, DeadLetterConfig{})
	if err != nil {
		t.Fatalf("EnsureDeadLetterStream: %v", err)
	}
	c := s.CachedInfo().Config
	if c.Name != "DLQ" || c.Subjects[0] != "dlq.>" || c.Storage != jetstream.FileStorage || c.MaxAge != 90*24*time.Hour {
		t.Fatalf("DLQ config = %+v", c)
	}
	if _, err := EnsureDeadLetterStream(t.Context(), js, DeadLetterConfig{}); err != nil {
		t.Fatalf("second EnsureDeadLetterStream: %v", err)
	}
	if _, err := js.Publish(t.Context(), "dlq.projection.orders", []byte(`{"reason":"x"}`)); err != nil {
		t.Fatalf("publish to DLQ: %v", err)
	}
}
