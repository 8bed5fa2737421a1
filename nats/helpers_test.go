package nats

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/testlog"
)

// testLogger logs to the test's output until the test ends; nats.go calls
// its handlers asynchronously and may log after the last cleanup.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t, slog.LevelWarn) }

// startServer runs an embedded server on a random port with its own store,
// shut down when the test ends.
func startServer(t testing.TB, logger *slog.Logger) *Server {
	t.Helper()
	return startServerAt(t, logger, RandomPort, t.TempDir())
}

// startServerAt keeps the password file in dir, so a server restarted on
// dir admits the clients of the previous one.
func startServerAt(t testing.TB, logger *slog.Logger, port int, dir string) *Server {
	t.Helper()
	srv, err := StartEmbedded(ServerConfig{Port: port, StoreDir: dir, PasswordFile: filepath.Join(dir, "password")}, logger)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func connect(t testing.TB, url string, logger *slog.Logger) (*natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := Connect(ctx, url, t.Name(), logger)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New: %v", err)
	}
	return nc, js
}

// setup is the common fixture: server, connection, EVENTS stream.
func setup(t testing.TB) (*Server, *natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	logger := testLogger(t)
	srv := startServer(t, logger)
	nc, js := connect(t, srv.ClientURL(), logger)
	if _, err := EnsureStream(t.Context(), js, StreamConfig{}); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	return srv, nc, js
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// makeEvents returns n events spread over a few hundred aggregates of the
// three aggregate types, each aggregate's versions increasing, with JSON
// payloads of about 300 bytes.
func makeEvents(n int) []Event {
	types := []struct{ agg, event string }{
		{"order", "OrderPlaced"}, {"product", "ProductPriceChanged"}, {"inventory", "InventoryReserved"},
	}
	const aggregates = 300
	versions := make(map[string]int64, aggregates)
	padding := strings.Repeat("x", 160)
	base := time.Date(2025, 11, 26, 9, 0, 0, 0, time.UTC)
	events := make([]Event, n)
	for i := range events {
		k := i % aggregates
		typ := types[k%len(types)]
		aggID := fmt.Sprintf("%s-%04d", typ.agg, k)
		versions[aggID]++
		events[i] = Event{
			ID:               newUUID(),
			AggregateType:    typ.agg,
			AggregateID:      aggID,
			AggregateVersion: versions[aggID],
			EventType:        typ.event,
			SchemaVersion:    1,
			OccurredAt:       base.Add(time.Duration(i) * time.Microsecond),
			TraceParent:      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			Payload: fmt.Appendf(nil, `{"aggregate_id":%q,"version":%d,"sku":"SKU-%05d","quantity":%d,"note":%q}`,
				aggID, versions[aggID], i%977, i%13+1, padding),
		}
	}
	return events
}

// readStream returns every message of the stream, decoded, in stream order.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("Stream.Info: %v", err)
	}
	total := int(info.State.Msgs)
	if total == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("OrderedConsumer: %v", err)
	}
	out := make([]Event, 0, total)
	for len(out) < total {
		batch, err := cons.Fetch(min(total-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		for m := range batch.Messages() {
			e, err := DecodeMsg(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				t.Fatalf("DecodeMsg of stored message: %v", err)
			}
			out = append(out, e)
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("Fetch batch: %v", err)
		}
	}
	return out
}

func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	return s.CachedInfo().State.Msgs
}
