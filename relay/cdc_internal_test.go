package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func newTestStream(t *testing.T) *cdcStream {
	t.Helper()
	r := &Relay{cfg: Config{DatabaseURL: "postgres://x@127.0.0.1/x"}.withDefaults()}
	return &cdcStream{
		r:         r,
		relations: make(map[uint32]*outboxRelation),
		streamed:  make(map[uint32]*txBuffer),
		queue:     newCommitQueue(1 << 20),
		pubDone:   make(chan struct{}),
	}
}

// committedSeqs drains the queue: each transaction as its events' seqs
// followed by its end LSN.
func committedSeqs(q *commitQueue) []string {
	var out []string
	for {
		tx, ok := q.tryPop()
		if !ok {
			return out
		}
		var seqs []string
		for _, e := range tx.events {
			if e.CommitLSN != tx.end {
				seqs = append(seqs, "badlsn")
			}
			seqs = append(seqs, fmt.Sprint(e.Seq))
		}
		out = append(out, strings.Join(seqs, ",")+"@"+tx.end.String())
	}
}

// TestStreamAssembly feeds pgoutput sequences a PostgreSQL 15 walsender
// produces and checks which events are queued, grouped by transaction, in
// commit order.
func TestStreamAssembly(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	ins := func(inStream bool, xid uint32, seq int64) []byte {
		return msgInsert(inStream, xid, outboxRelID, tupleText(outboxValues(sampleEvent(seq))))
	}
	other := func(inStream bool, xid uint32) []byte {
		s := "x"
		return msgInsert(inStream, xid, 99, tupleText([]*string{&s}))
	}
	rel := func(inStream bool, xid uint32) []byte {
		return msgRelation(inStream, xid, outboxRelID, outboxTable, outboxColumnsInTableOrder)
	}
	otherRel := msgRelation(false, 0, 99, "orders", []string{"id"})
	tests := []struct {
		name string
		msgs [][]byte
		want []string
	}{
		{"plain transaction", [][]byte{
			msgBegin(0x200, at, 10), rel(false, 0), ins(false, 0, 1), ins(false, 0, 2), msgCommit(0x1f0, 0x200, at),
		}, []string{"1,2@0/200"}},
		{"other table ignored", [][]byte{
			otherRel, msgBegin(0x300, at, 11), other(false, 0), rel(false, 0), ins(false, 0, 3), other(false, 0), msgCommit(0x2f0, 0x300, at),
		}, []string{"3@0/300"}},
		{"streamed with subtransaction aborts", [][]byte{
			msgStreamStart(100, true), rel(true, 100), ins(true, 100, 1), ins(true, 101, 2), ins(true, 102, 3), ins(true, 103, 4), msgStreamStop(),
			msgStreamStart(100, false), ins(true, 101, 5), ins(true, 100, 6), msgStreamStop(),
			// ROLLBACK TO a savepoint that had a released child: both abort.
			msgStreamAbort(100, 101), msgStreamAbort(100, 103),
			msgStreamStart(100, false), ins(true, 100, 7), msgStreamStop(),
			msgStreamCommit(100, 0x4f0, 0x500, at),
		}, []string{"1,3,6,7@0/500"}},
		{"streamed then aborted", [][]byte{
			msgStreamStart(200, true), rel(true, 200), ins(true, 200, 1), msgStreamStop(),
			msgStreamStart(200, false), ins(true, 200, 2), msgStreamStop(),
			msgStreamAbort(200, 200),
		}, nil},
		{"interleaved streamed and plain transactions commit in order", [][]byte{
			rel(false, 0),
			msgStreamStart(300, true), ins(true, 300, 1), msgStreamStop(),
			msgStreamStart(301, true), ins(true, 301, 2), msgStreamStop(),
			msgBegin(0x600, at, 302), ins(false, 0, 3), msgCommit(0x5f0, 0x600, at),
			msgStreamStart(300, false), ins(true, 300, 4), msgStreamStop(),
			msgStreamCommit(301, 0x6f0, 0x700, at),
			msgStreamCommit(300, 0x7f0, 0x800, at),
		}, []string{"3@0/600", "2@0/700", "1,4@0/800"}},
		{"heartbeats", [][]byte{
			msgBegin(0x900, at, 400), msgLogical(true, 0x8f0, heartbeatPrefix, nil), msgCommit(0x8f8, 0x900, at),
			msgLogical(false, 0x910, heartbeatPrefix, nil),
			msgLogical(false, 0x920, "someone.else", []byte("x")),
		}, []string{"@0/900", "@0/910"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestStream(t)
			for i, m := range tt.msgs {
				if err := s.handle(t.Context(), m); err != nil {
					t.Fatalf("message %d (%c): %v", i, m[0], err)
				}
			}
			if got := committedSeqs(s.queue); !slices.Equal(got, tt.want) {
				t.Errorf("queued %q, want %q", got, tt.want)
			}
			if len(s.streamed) != 0 && tt.name != "streamed then aborted" {
				t.Errorf("%d streamed transactions left open", len(s.streamed))
			}
		})
	}
}

func TestStreamAssemblyRejectsProtocolErrors(t *testing.T) {
	t.Parallel()
	at := time.Now()
	ins := msgInsert(false, 0, outboxRelID, tupleText(outboxValues(sampleEvent(1))))
	for name, msgs := range map[string][][]byte{
		"insert before relation": {msgBegin(1, at, 1), ins},
		"insert outside a transaction": {
			msgRelation(false, 0, outboxRelID, outboxTable, outboxColumnsInTableOrder), ins,
		},
		"commit without begin": {msgCommit(1, 2, at)},
		"outbox without a contract column": {
			msgRelation(false, 0, outboxRelID, outboxTable, []string{"seq", "id"}),
		},
	} {
		s := newTestStream(t)
		var err error
		for _, m := range msgs {
			if err = s.handle(t.Context(), m); err != nil {
				break
			}
		}
		if !errors.Is(err, errDecode) || !isPermanent(err) {
			t.Errorf("%s: err %v, want a permanent decode error", name, err)
		}
	}
}

// scriptedPublisher acknowledges per a script of answers and then
// everything; on every call it checks that the relay never confirmed past
// the last transaction it had fully stored, and that it appends right after
// what the stream holds.
type scriptedPublisher struct {
	t      *testing.T
	r      *Relay
	txs    []*committedTx // every transaction the relay is given, in order
	mu     sync.Mutex
	script []answer
	stored []Event
}

// answer is one scripted PublishBatch outcome: acked events acknowledged,
// and lost more stored whose acknowledgement is lost; acked -1 stores and
// acknowledges all.
type answer struct{ acked, lost int }

// safe is the end of the last transaction whose events, and all before
// them, are stored.
func (p *scriptedPublisher) safe() LSN {
	var safe LSN
	left := len(p.stored)
	for _, tx := range p.txs {
		if len(tx.events) > left {
			break
		}
		left -= len(tx.events)
		safe = tx.end
	}
	return safe
}

func (p *scriptedPublisher) Last(context.Context) (uint64, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.stored) == 0 {
		return 0, "", nil
	}
	return uint64(len(p.stored)), p.stored[len(p.stored)-1].Position(), nil
}

func (p *scriptedPublisher) LastPosition(_ context.Context, after uint64) (uint64, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if uint64(len(p.stored)) <= after {
		return 0, "", nil
	}
	return uint64(len(p.stored)), p.stored[len(p.stored)-1].Position(), nil
}

func (p *scriptedPublisher) EventIDs(_ context.Context, after, through uint64, fn func(uint64, string) error) error {
	p.mu.Lock()
	stored := slices.Clone(p.stored[after:min(through, uint64(len(p.stored)))])
	p.mu.Unlock()
	for i, e := range stored {
		if err := fn(after+uint64(i)+1, e.ID); err != nil {
			return err
		}
	}
	return nil
}

func (p *scriptedPublisher) PublishBatch(_ context.Context, after uint64, events []Event) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, safe := LSN(p.r.confirmed.Load()), p.safe(); c > safe {
		p.t.Errorf("confirmed %s before everything up to it was stored (safe %s)", c, safe)
	}
	if after != uint64(len(p.stored)) {
		p.t.Errorf("PublishBatch after sequence %d; the stream holds %d", after, len(p.stored))
		return 0, errors.New("wrong last sequence")
	}
	n, stored := len(events), len(events)
	var err error
	if len(p.script) > 0 {
		if a := p.script[0]; a.acked >= 0 {
			n, stored, err = min(a.acked, n), min(a.acked+a.lost, n), errors.New("nats: ack timeout")
		}
		p.script = p.script[1:]
	}
	p.stored = append(p.stored, events[:stored]...)
	return n, err
}

// PublishStream answers each batch per the script, as PublishBatch does,
// and stops at the first batch answered with a failure.
func (p *scriptedPublisher) PublishStream(_ context.Context, after uint64, batches <-chan []Event, acked func()) (int, error) {
	total := 0
	for events := range batches {
		p.mu.Lock()
		if c, safe := LSN(p.r.confirmed.Load()), p.safe(); c > safe {
			p.t.Errorf("confirmed %s before everything up to it was stored (safe %s)", c, safe)
		}
		if after+uint64(total) != uint64(len(p.stored)) {
			p.t.Errorf("PublishStream sends after sequence %d; the stream holds %d", after+uint64(total), len(p.stored))
			p.mu.Unlock()
			return total, errors.New("wrong last sequence")
		}
		n, stored := len(events), len(events)
		var err error
		if len(p.script) > 0 {
			if a := p.script[0]; a.acked >= 0 {
				n, stored, err = min(a.acked, n), min(a.acked+a.lost, n), errors.New("nats: ack timeout")
			}
			p.script = p.script[1:]
		}
		p.stored = append(p.stored, events[:stored]...)
		p.mu.Unlock()
		for range n {
			acked()
		}
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// TestPublishCommittedConfirmsOnlyAcknowledged runs the publisher goroutine
// over transactions larger than a batch, with partial acknowledgements,
// failures and lost acknowledgements, after a restart whose slot re-sends
// events the stream already holds, and checks order, completeness and the
// confirmed position.
func TestPublishCommittedConfirmsOnlyAcknowledged(t *testing.T) {
	t.Parallel()
	r := &Relay{cfg: Config{DatabaseURL: "postgres://x@127.0.0.1/x", BatchSize: 4, MaxPendingEvents: 8}.withDefaults()}
	r.metrics, _ = newMetrics(nil)
	r.log = r.cfg.Logger
	pub := &scriptedPublisher{t: t, r: r, script: []answer{{-1, 0}, {2, 0}, {0, 0}, {3, 1}, {-1, 0}, {1, 2}, {0, 3}, {-1, 0}}}
	r.pub = pub

	q := newCommitQueue(r.cfg.MaxPendingEvents)
	var want []int64
	seq := int64(0)
	sizes := []int{1, 0, 9, 2, 0, 0, 5, 1, 13, 3}
	var txs []*committedTx
	for i, n := range sizes {
		tx := &committedTx{end: LSN(0x1000 * (i + 1))}
		for range n {
			seq++
			want = append(want, seq)
			tx.events = append(tx.events, Event{Seq: seq, ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", seq),
				CommitLSN: tx.end, TxIndex: len(tx.events)})
		}
		txs = append(txs, tx)
	}
	// The stream already holds the first 3 events: acknowledged before a
	// crash, not confirmed, so the slot sends them again. Its last message
	// carries the third's position.
	const held = 3
	for _, tx := range txs {
		for _, e := range tx.events {
			if e.Seq <= held {
				pub.stored = append(pub.stored, e)
			}
		}
	}
	r.streamLast = held
	pub.txs = txs
	_, lastPosition, _ := pub.Last(t.Context())
	heldThrough, ok := parsePosition(lastPosition)
	if !ok {
		t.Fatalf("parsePosition(%q) failed", lastPosition)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.publishCommitted(ctx, t.Context(), q, heldThrough) }()
	for _, tx := range txs {
		for !q.tryPush(tx) {
			<-q.notFull
		}
	}
	last := txs[len(txs)-1].end
	deadline := time.Now().Add(20 * time.Second)
	for LSN(r.confirmed.Load()) != last && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := LSN(r.confirmed.Load()); got != last {
		t.Fatalf("confirmed %s, want %s", got, last)
	}
	var got []int64
	for _, e := range pub.stored {
		got = append(got, e.Seq)
	}
	if !slices.Equal(got, want) {
		t.Errorf("stored seqs %v, want %v", got, want)
	}
	if n := r.published.Load(); n != uint64(len(want)-held) {
		t.Errorf("published %d, want %d", n, len(want)-held)
	}
}

func TestWALLevelError(t *testing.T) {
	t.Parallel()
	err := walLevelError("replica", 15, "15/main")
	if !errors.Is(err, ErrWALLevel) {
		t.Errorf("%v does not match ErrWALLevel", err)
	}
	for _, want := range []string{
		"wal_level=replica",
		"ALTER SYSTEM SET wal_level = logical;",
		"pg_ctlcluster --skip-systemctl-redirect 15 main restart",
		"bash scripts/services.sh",
		"--relay-mode=poll",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q:\n%s", want, err)
		}
	}
	if msg := walLevelError("minimal", 16, "").Error(); !strings.Contains(msg, "pg_ctlcluster --skip-systemctl-redirect 16 main restart") {
		t.Errorf("without cluster_name:\n%s", msg)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{DatabaseURL: "postgres://postgres@127.0.0.1:5432/jetcqrs"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	d := ok.withDefaults()
	if d.Mode != ModeCDC || d.SlotName != DefaultSlotName || d.PublicationName != DefaultPublicationName ||
		d.BatchSize != DefaultBatchSize || d.MaxPendingEvents != 4*DefaultBatchSize || d.LeaderLockKey == 0 {
		t.Errorf("defaults: %+v", d)
	}
	other := ok
	other.SlotName = "other"
	if other.withDefaults().LeaderLockKey == d.LeaderLockKey {
		t.Error("two slots derive the same leader lock key")
	}
	tests := []struct {
		field  string
		mutate func(*Config)
	}{
		{"DatabaseURL", func(c *Config) { c.DatabaseURL = "" }},
		{"DatabaseURL", func(c *Config) { c.DatabaseURL = "postgres://%zz" }},
		{"Mode", func(c *Config) { c.Mode = "wal" }},
		{"SlotName", func(c *Config) { c.SlotName = "Bad-Slot" }},
		{"SlotName", func(c *Config) { c.SlotName = strings.Repeat("s", 64) }},
		{"PublicationName", func(c *Config) { c.PublicationName = strings.Repeat("p", 64) }},
		{"StatusInterval", func(c *Config) { c.StatusInterval = -time.Second }},
		{"StatusInterval", func(c *Config) { c.StatusInterval = 6 * time.Second }},
		{"DeadPeerTimeout", func(c *Config) { c.DeadPeerTimeout = 10 * time.Millisecond }},
		{"BatchSize", func(c *Config) { c.BatchSize = -1 }},
		{"MaxPendingEvents", func(c *Config) { c.BatchSize, c.MaxPendingEvents = 100, 10 }},
		{"PollInterval", func(c *Config) { c.PollInterval = -1 }},
	}
	for _, tt := range tests {
		c := ok
		tt.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "Config."+tt.field) {
			t.Errorf("%s: err %v, want one naming Config.%s", tt.field, err, tt.field)
		}
	}
	if _, err := New(ok, nil); err == nil {
		t.Error("New accepted a nil Publisher")
	}
}

func TestPositionOrder(t *testing.T) {
	t.Parallel()
	e := Event{CommitLSN: 0x16B374D848, TxIndex: 2}
	if got := e.Position(); got != "16/B374D848:2" {
		t.Fatalf("Position() = %q", got)
	}
	p, ok := parsePosition(e.Position())
	if !ok || p.before(e) {
		t.Fatalf("parsePosition(%q) = %+v, %v; an event must not come after its own position", e.Position(), p, ok)
	}
	for _, later := range []Event{{CommitLSN: 0x16B374D848, TxIndex: 3}, {CommitLSN: 0x16B374D849}} {
		if !p.before(later) {
			t.Errorf("%s does not come after %s", later.Position(), e.Position())
		}
	}
	if (Event{}).Position() != "" || !(position{}).before(Event{CommitLSN: 1}) {
		t.Error("an event without a commit LSN has a position, or the zero position does not precede everything")
	}
	for _, bad := range []string{"", "16/B374D848", "x:1", "16/B374D848:-1"} {
		if _, ok := parsePosition(bad); ok {
			t.Errorf("parsePosition(%q) accepted it", bad)
		}
	}
}

func TestNormalizeSnapshot(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"164948:164946:":       "164948:164948:",
		"100:105:101,103":      "100:105:101,103",
		"100:100:":             "100:100:",
		"164948:164946:164947": "164948:164948:",
	} {
		if got, err := normalizeSnapshot(in); err != nil || got != want {
			t.Errorf("normalizeSnapshot(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := normalizeSnapshot("x:1:"); err == nil {
		t.Error("normalizeSnapshot accepted a malformed snapshot")
	}
}

// TestWALStatusWarnings feeds the slot's WAL status samples to the relay:
// unreserved is a warning and lost an error, each logged once when the
// status turns so, and the metrics follow every sample.
func TestWALStatusWarnings(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	r := &Relay{cfg: Config{DatabaseURL: "postgres://x@127.0.0.1/x"}.withDefaults(),
		log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	reg := prometheus.NewRegistry()
	var err error
	if r.metrics, err = newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	gauge := func(name, status string) float64 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if status == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == status {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("no %s{%s}", name, status)
		return 0
	}
	safe := int64(1 << 20)
	for _, status := range []string{"reserved", "unreserved", "unreserved", "lost", "lost", ""} {
		r.noteWALStatus(status, &safe)
	}
	out := logs.String()
	if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "WAL is unreserved") {
		t.Errorf("want one warning for unreserved; logs:\n%s", out)
	}
	if strings.Count(out, "level=ERROR") != 1 || !strings.Contains(out, "invalidated (wal_status=lost)") {
		t.Errorf("want one error for lost; logs:\n%s", out)
	}
	r.noteWALStatus("unreserved", nil)
	if got := gauge("jetcqrs_relay_slot_wal_status", "unreserved"); got != 1 {
		t.Errorf("wal_status{unreserved} = %v, want 1", got)
	}
	if got := gauge("jetcqrs_relay_slot_wal_status", "lost"); got != 0 {
		t.Errorf("wal_status{lost} = %v, want 0", got)
	}
	if got := gauge("jetcqrs_relay_slot_safe_wal_size_bytes", ""); got != -1 {
		t.Errorf("safe_wal_size = %v, want -1 (unlimited)", got)
	}
	if st := r.Status(); st.WALStatus != "unreserved" || st.SafeWALSizeBytes != nil {
		t.Errorf("Status() = %+v", st)
	}
}
