package nats

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestPublisherConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     PublisherConfig
		wantErr string
	}{
		{"defaults", PublisherConfig{}, ""},
		{"window of one", PublisherConfig{MaxInFlight: 1}, ""},
		{"negative window", PublisherConfig{MaxInFlight: -1}, "MaxInFlight"},
		{"partitions", PublisherConfig{Partitions: -3}, "Partitions"},
		{"ack timeout", PublisherConfig{AckTimeout: -time.Second}, "AckTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assertValidateErr(t, tt.cfg.Validate(), tt.wantErr)
		})
	}
}

func newPublisher(t testing.TB, js jetstream.JetStream, cfg PublisherConfig) *Publisher {
	t.Helper()
	if cfg.AckTimeout == 0 {
		// Under -race on a busy machine the in-process server can take
		// seconds to work through a full window; these tests are about
		// order and exactly-once, not timeouts.
		cfg.AckTimeout = 30 * time.Second
	}
	p, err := NewPublisher(js, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Publisher.Close: %v", err)
		}
	})
	return p
}

func TestPublishBatchStoresEveryEventOnceInOrder(t *testing.T) {
	t.Parallel()
	_, _, js := setup(t)
	var acks []AckInfo
	p := newPublisher(t, js, PublisherConfig{OnAck: func(a AckInfo) { acks = append(acks, a) }})
	events := makeEvents(20_000)

	acked, err := p.PublishBatch(t.Context(), 0, events)
	if err != nil || acked != len(events) {
		t.Fatalf("PublishBatch = %d, %v; want %d, nil", acked, err, len(events))
	}

	stored := readStream(t, js, "EVENTS")
	if len(stored) != len(events) {
		t.Fatalf("stream holds %d events, want %d", len(stored), len(events))
	}
	for i := range events {
		if stored[i].ID != events[i].ID {
			t.Fatalf("stream position %d holds %s, want %s (order broken)", i, stored[i].ID, events[i].ID)
		}
	}
	assertSameEvent(t, stored[123], events[123])

	if len(acks) != len(events) {
		t.Fatalf("OnAck called %d times, want %d", len(acks), len(events))
	}
	for i, a := range acks {
		if a.Index != i || a.Event != &events[i] || a.Sequence != uint64(i+1) || a.AckedAt.Before(a.SentAt) {
			t.Fatalf("ack %d = %+v", i, a)
		}
	}
	st := p.Stats()
	if st.Published != uint64(len(events)) || st.Failed != 0 || st.LastAck.IsZero() {
		t.Fatalf("stats = %+v", st)
	}
}

// Re-publishing stored events after the duplicate window has passed stores
// nothing: each publish names the sequence the stream must be at, so a
// repeat is refused whatever the window remembers.
func TestPublishBatchRefusesRepeatsAfterTheDuplicateWindow(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)
	if _, err := EnsureStream(t.Context(), js, StreamConfig{DuplicateWindow: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js, PublisherConfig{})
	events := makeEvents(500)
	if n, err := p.PublishBatch(t.Context(), 0, events); err != nil || n != len(events) {
		t.Fatalf("first PublishBatch = %d, %v", n, err)
	}
	time.Sleep(time.Second) // the window has forgotten the ids
	n, err := p.PublishBatch(t.Context(), 0, events)
	if n != 0 || !errors.Is(err, ErrUnexpectedSequence) {
		t.Fatalf("re-publish = %d, %v; want 0 and ErrUnexpectedSequence", n, err)
	}
	n, err = p.PublishBatch(t.Context(), 200, events[200:])
	if n != 0 || !errors.Is(err, ErrUnexpectedSequence) {
		t.Fatalf("re-publish of a suffix = %d, %v; want 0 and ErrUnexpectedSequence", n, err)
	}
	if got := streamMsgs(t, js, "EVENTS"); got != uint64(len(events)) {
		t.Fatalf("stream holds %d messages after re-publishing, want %d", got, len(events))
	}
	last, _, err := p.Last(t.Context())
	if err != nil || last != uint64(len(events)) {
		t.Fatalf("Last = %d, %v; want %d", last, err, len(events))
	}
	var ids []string
	if err := p.EventIDs(t.Context(), 490, last, func(seq uint64, id string) error {
		if seq != uint64(491+len(ids)) {
			t.Errorf("EventIDs: sequence %d at position %d", seq, len(ids))
		}
		ids = append(ids, id)
		return nil
	}); err != nil {
		t.Fatalf("EventIDs: %v", err)
	}
	if len(ids) != 10 || ids[0] != events[490].ID || ids[9] != events[499].ID {
		t.Fatalf("EventIDs(490, %d) = %v", last, ids)
	}
}

func TestPublishBatchWindowSizes(t *testing.T) {
	t.Parallel()
	_, _, js := setup(t)
	events := makeEvents(1200)
	offset := 0
	for _, window := range []int{1, 7, 1000, 5000} {
		p := newPublisher(t, js, PublisherConfig{MaxInFlight: window})
		batch := events[offset : offset+300]
		if n, err := p.PublishBatch(t.Context(), uint64(offset), batch); err != nil || n != len(batch) {
			t.Fatalf("window %d: PublishBatch = %d, %v", window, n, err)
		}
		offset += 300
	}
	stored := readStream(t, js, "EVENTS")
	for i := range events {
		if stored[i].ID != events[i].ID {
			t.Fatalf("position %d: got %s, want %s", i, stored[i].ID, events[i].ID)
		}
	}
}

func TestPublishBatchStopsAtMalformedEvent(t *testing.T) {
	t.Parallel()
	_, _, js := setup(t)
	p := newPublisher(t, js, PublisherConfig{})
	events := makeEvents(500)
	events[200].EventType = "Order.Placed"

	n, err := p.PublishBatch(t.Context(), 0, events)
	if n != 200 || !errors.Is(err, ErrMalformedEvent) {
		t.Fatalf("PublishBatch = %d, %v; want 200 and ErrMalformedEvent", n, err)
	}
	if got := streamMsgs(t, js, "EVENTS"); got != 200 {
		t.Fatalf("stream holds %d messages, want the 200 before the malformed event", got)
	}
}

func TestPublishBatchWithoutStream(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)
	p := newPublisher(t, js, PublisherConfig{})

	n, err := p.PublishBatch(t.Context(), 0, makeEvents(100))
	if n != 0 || !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("PublishBatch with no stream = %d, %v; want 0, ErrNoStreamResponse", n, err)
	}
	if st := p.Stats(); st.Failed == 0 || st.Published != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// A definite rejection in the middle of a window: the events already in
// flight behind the rejected one are refused too (they name a sequence the
// stream never reached), so none of them lands before the rejected event's
// retry and an aggregate's order cannot break.
func TestPublishBatchStoresNothingAfterARejection(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.FileStorage, MaxMsgSize: 1024,
		Metadata: map[string]string{PartitionsMetadataKey: "16"},
	}); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js, PublisherConfig{})
	events := makeEvents(200)
	for i := range events { // one aggregate, one partition
		events[i].AggregateType, events[i].AggregateID, events[i].AggregateVersion = "order", "order-1", int64(i+1)
		events[i].EventType = "OrderPlaced"
	}
	events[5].Payload = []byte(`"` + strings.Repeat("x", 2048) + `"`)

	n, err := p.PublishBatch(t.Context(), 0, events)
	var apiErr *jetstream.APIError
	if n != 5 || !errors.As(err, &apiErr) || errors.Is(err, ErrUnexpectedSequence) {
		t.Fatalf("PublishBatch = %d, %v; want 5 and the server's rejection of event 5", n, err)
	}
	stored := readStream(t, js, "EVENTS")
	if len(stored) != 5 {
		t.Fatalf("stream holds %d events, want only the 5 before the rejected one", len(stored))
	}
	if st := p.Stats(); st.Published != 5 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestPublishBatchAfterCloseAndCancel(t *testing.T) {
	t.Parallel()
	_, _, js := setup(t)
	p := newPublisher(t, js, PublisherConfig{})

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if n, err := p.PublishBatch(ctx, 0, makeEvents(10)); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("PublishBatch with a cancelled context = %d, %v", n, err)
	}

	// Cancelled mid-batch: the prefix so far, the context's error, and the
	// abandoned publishes still settle for Flush.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	mid := newPublisher(t, js, PublisherConfig{OnAck: func(a AckInfo) {
		if a.Index == 100 {
			cancel()
		}
	}})
	events := makeEvents(5000)
	n, err := mid.PublishBatch(ctx, 0, events)
	if !errors.Is(err, context.Canceled) || n < 101 || n >= len(events) {
		t.Fatalf("PublishBatch cancelled at the 101st ack = %d, %v", n, err)
	}
	if err := mid.Flush(t.Context()); err != nil {
		t.Fatalf("Flush after a cancelled batch: %v", err)
	}
	if got := streamMsgs(t, js, "EVENTS"); got < uint64(n) {
		t.Fatalf("stream holds %d events, fewer than the %d acked", got, n)
	}

	if err := p.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := p.PublishBatch(t.Context(), 0, makeEvents(1)); !errors.Is(err, ErrPublisherClosed) {
		t.Fatalf("PublishBatch after Close = %v, want ErrPublisherClosed", err)
	}
}

// The relay's loop across a server restart: publish in chunks, retry the
// unacknowledged suffix after a failure. The stream must end up with every
// event exactly once and each partition in commit order.
func TestPublishBatchSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	dir := t.TempDir()
	first, err := StartEmbedded(ServerConfig{Port: RandomPort, StoreDir: dir}, logger)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(first.ClientURL())
	port, _ := strconv.Atoi(u.Port())
	var (
		mu     sync.Mutex
		second *Server
	)
	t.Cleanup(func() {
		first.Shutdown()
		mu.Lock()
		defer mu.Unlock()
		if second != nil {
			second.Shutdown()
		}
	})
	_, js := connect(t, first.ClientURL(), logger)
	if _, err := EnsureStream(t.Context(), js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}

	// Once a quarter of the events are acknowledged, restart the server
	// underneath the publishing loop below, on the same port and store.
	restarted := make(chan error, 1)
	ackedTotal := 0
	p := newPublisher(t, js, PublisherConfig{AckTimeout: 2 * time.Second, OnAck: func(AckInfo) {
		ackedTotal++
		if ackedTotal != 2500 {
			return
		}
		go func() {
			first.Shutdown()
			srv, err := StartEmbedded(ServerConfig{Port: port, StoreDir: dir}, logger)
			mu.Lock()
			second = srv
			mu.Unlock()
			restarted <- err
		}()
	}})

	events := makeEvents(10_000)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const chunk = 500
	failures := 0
	for next := 0; next < len(events); {
		n, err := p.PublishBatch(ctx, uint64(next), events[next:min(next+chunk, len(events))])
		next += n
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("gave up with %d of %d events published: %v", next, len(events), err)
			}
			failures++
			time.Sleep(20 * time.Millisecond)
			// An unknown outcome may have stored more than the acked
			// prefix: the stream says how much.
			for {
				last, _, err := p.Last(ctx)
				if err == nil {
					next = int(last)
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("Last: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restart: %v", err)
	}
	if failures == 0 {
		t.Fatal("the restart never interrupted publishing; the test proved nothing")
	}
	t.Logf("%d failed PublishBatch calls across the restart; stats %+v", failures, p.Stats())

	stored := readStream(t, js, "EVENTS")
	if len(stored) != len(events) {
		t.Fatalf("stream holds %d events, want %d", len(stored), len(events))
	}
	position := make(map[string]int, len(events))
	for i, e := range events {
		position[e.ID] = i
	}
	lastInPartition := map[string]int{}
	seen := make(map[string]bool, len(events))
	for seq, e := range stored {
		i, ok := position[e.ID]
		if !ok || seen[e.ID] {
			t.Fatalf("stream seq %d: event %s unknown or stored twice", seq+1, e.ID)
		}
		seen[e.ID] = true
		key := PartitionFilter(e.AggregateType, Partition(e.AggregateID, DefaultPartitions))
		if last, ok := lastInPartition[key]; ok && i < last {
			t.Fatalf("partition %s: event %d stored after event %d", key, i, last)
		}
		lastInPartition[key] = i
	}
}

// A publisher that re-sends what another one (a relay that just lost its
// lease) already stored, within the duplicate window, is refused: the stream
// is past the sequence it names. Nothing is stored twice.
func TestPublishBatchRefusesWhatAnotherPublisherStored(t *testing.T) {
	t.Parallel()
	_, _, js := setup(t)
	first, second := newPublisher(t, js, PublisherConfig{}), newPublisher(t, js, PublisherConfig{})
	events := makeEvents(50)
	if n, err := first.PublishBatch(t.Context(), 0, events); err != nil || n != len(events) {
		t.Fatalf("first PublishBatch = %d, %v", n, err)
	}
	if n, err := second.PublishBatch(t.Context(), 20, events[20:]); n != 0 || !errors.Is(err, ErrUnexpectedSequence) {
		t.Fatalf("second PublishBatch of the same suffix = %d, %v; want 0 and ErrUnexpectedSequence", n, err)
	}
	if got := streamMsgs(t, js, "EVENTS"); got != uint64(len(events)) {
		t.Fatalf("stream holds %d messages, want %d", got, len(events))
	}
}

// PublishStream keeps publishes in flight across batch boundaries, the
// expected sequence running on from batch to batch; a rejection in one
// batch stops the stream there, the publishes of the later batches already
// in flight are refused, and the stream holds only the prefix before it.
func TestPublishStreamAcrossBatches(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	_, js := connect(t, srv.ClientURL(), logger)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.FileStorage, MaxMsgSize: 1024,
		Metadata: map[string]string{PartitionsMetadataKey: "16"},
	}); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js, PublisherConfig{MaxInFlight: 64})
	events := makeEvents(1000)
	for i := range events { // one aggregate, one partition
		events[i].AggregateType, events[i].AggregateID, events[i].AggregateVersion = "order", "order-1", int64(i+1)
		events[i].EventType = "OrderPlaced"
	}
	stream := func(after uint64, evs []Event, size int) (int, []int, error) {
		batches := make(chan []Event, len(evs)/size+1)
		for i := 0; i < len(evs); i += size {
			batches <- evs[i:min(i+size, len(evs))]
		}
		close(batches)
		var acked []int
		n, err := p.PublishStream(t.Context(), after, batches, func(i int) { acked = append(acked, i) })
		return n, acked, err
	}

	n, acked, err := stream(0, events[:600], 7)
	if err != nil || n != 600 || len(acked) != 600 || acked[599] != 599 {
		t.Fatalf("PublishStream = %d, %v (%d acks); want 600, nil", n, err, len(acked))
	}
	rest := events[600:]
	rest[50].Payload = []byte(`"` + strings.Repeat("x", 2048) + `"`) // the stream refuses it: too large
	n, acked, err = stream(600, rest, 9)
	var apiErr *jetstream.APIError
	if n != 50 || len(acked) != 50 || !errors.As(err, &apiErr) || errors.Is(err, ErrUnexpectedSequence) {
		t.Fatalf("PublishStream = %d, %v (%d acks); want 50 and the server's rejection of event 50", n, err, len(acked))
	}
	stored := readStream(t, js, "EVENTS")
	if len(stored) != 650 {
		t.Fatalf("stream holds %d events, want only the 650 before the rejected one", len(stored))
	}
	for i := range stored {
		if stored[i].ID != events[i].ID {
			t.Fatalf("stream position %d holds %s, want %s", i, stored[i].ID, events[i].ID)
		}
	}
	// Sent again after the stream's last sequence, the rest lands in order.
	rest[50].Payload = events[0].Payload
	if n, _, err := stream(650, rest[50:], 11); err != nil || n != 350 {
		t.Fatalf("PublishStream again = %d, %v; want 350, nil", n, err)
	}
	stored = readStream(t, js, "EVENTS")
	if len(stored) != len(events) {
		t.Fatalf("stream holds %d events, want %d", len(stored), len(events))
	}
	for i := range stored {
		if stored[i].ID != events[i].ID {
			t.Fatalf("stream position %d holds %s, want %s", i, stored[i].ID, events[i].ID)
		}
	}
}

// LastPosition passes over what the publisher did not append: a copy
// re-published by hand (with the original's commit position but not its
// expected sequence) and another writer's message without a position.
func TestLastPositionSkipsForeignMessages(t *testing.T) {
	t.Parallel()
	_, _, js := setup(t)
	p := newPublisher(t, js, PublisherConfig{})
	events := makeEvents(5)
	for i := range events {
		events[i].CommitPosition = "0/" + strconv.Itoa(16+i) + ":0"
	}
	if n, err := p.PublishBatch(t.Context(), 0, events); err != nil || n != 5 {
		t.Fatalf("PublishBatch = %d, %v", n, err)
	}
	if seq, pos, err := p.LastPosition(t.Context(), 0); err != nil || seq != 5 || pos != "0/20:0" {
		t.Fatalf("LastPosition = %d, %q, %v; want 5, 0/20:0", seq, pos, err)
	}
	s, err := js.Stream(t.Context(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := s.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	copied := natsgo.NewMsg(orig.Subject)
	copied.Data = orig.Data
	for name, v := range orig.Header {
		if name != jetstream.ExpectedLastSeqHeader && name != HeaderMsgID {
			copied.Header[name] = v
		}
	}
	if _, err := js.PublishMsg(t.Context(), copied); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), orig.Subject, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if seq, pos, err := p.LastPosition(t.Context(), 0); err != nil || seq != 5 || pos != "0/20:0" {
		t.Fatalf("LastPosition after foreign messages = %d, %q, %v; want 5, 0/20:0", seq, pos, err)
	}
	if seq, pos, err := p.LastPosition(t.Context(), 5); err != nil || seq != 0 || pos != "" {
		t.Fatalf("LastPosition after 5 = %d, %q, %v; want 0, \"\"", seq, pos, err)
	}
	if last, pos, err := p.Last(t.Context()); err != nil || last != 7 || pos != "" {
		t.Fatalf("Last = %d, %q, %v; want 7 and no position", last, pos, err)
	}
}
