package relay_test

import (
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/jetcqrs/jetcqrs/nats"
)

// TestResumesAfterForeignMessages kills a relay whose last events are
// acknowledged but not confirmed to the slot, then appends to the stream
// what the relay did not: a copy of the stream's first event re-published
// by hand (it keeps its commit position, an old one) and an event from
// another writer (no commit position). The restarted relay must resume from
// its own last message, not from the stream's last one: the slot sends the
// unconfirmed events again and the stream already holds them.
func TestResumesAfterForeignMessages(t *testing.T) {
	e := newEnv(t)
	if _, err := nats.EnsureStream(t.Context(), e.js, nats.StreamConfig{DuplicateWindow: time.Second}); err != nil {
		t.Fatal(err)
	}
	e.install(e.config())

	first := e.startChild("relay-foreign", childStatusEnv+"=20s")
	e.waitStreaming("relay-foreign", 30*time.Second)
	committed := commitTransactions(t, e, 40, 10)
	e.waitCount(uint64(len(committed)), time.Minute)
	first.kill()
	var unconfirmed bool
	if err := e.pool.QueryRow(t.Context(), `SELECT confirmed_flush_lsn < pg_current_wal_lsn() FROM pg_replication_slots
		WHERE slot_name = $1`, e.slot).Scan(&unconfirmed); err != nil || !unconfirmed {
		t.Fatalf("the slot confirmed everything before the kill (%v); the test proves nothing", err)
	}
	held := e.streamCount()

	// A hand re-publish of the first event after the duplicate window: its
	// headers without the relay's publish conditions.
	time.Sleep(1500 * time.Millisecond)
	s, err := e.js.Stream(t.Context(), nats.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := s.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if orig.Header.Get(nats.HeaderCommitPosition) == "" {
		t.Fatal("the relay's event carries no commit position")
	}
	foreign := nats.Event{ID: "0e6b3c1a-6d1f-4a8e-9d3c-5a7b2f4e1c90", AggregateType: "order", AggregateID: "foreign-1",
		AggregateVersion: 1, EventType: "OrderPlaced", SchemaVersion: 1, OccurredAt: time.Now().UTC(),
		Payload: []byte(`{"v":1}`)}
	fmsg, err := foreign.Msg(nats.DefaultPartitions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(t.Context(), fmsg); err != nil {
		t.Fatalf("foreign publish: %v", err)
	}
	copyMsg := &natsgo.Msg{Subject: orig.Subject, Header: natsgo.Header{}, Data: orig.Data}
	for name, v := range orig.Header {
		if !strings.HasPrefix(name, "Nats-Expected-") {
			copyMsg.Header[name] = v
		}
	}
	if _, err := e.js.PublishMsg(t.Context(), copyMsg); err != nil {
		t.Fatalf("re-publish: %v", err)
	}

	second := e.startChild("relay-foreign")
	e.waitStreaming("relay-foreign", 30*time.Second)
	more := commitTransactions(t, e, 20, 10)
	committed = append(committed, more...)
	e.waitCount(uint64(len(committed)+2), time.Minute)
	time.Sleep(time.Second) // a late duplicate would show now
	if err := second.terminate(20 * time.Second); err != nil {
		t.Errorf("relay after SIGTERM: %v", err)
	}
	out := second.out.String()
	if !strings.Contains(out, "not appended by this relay") {
		t.Errorf("the restarted relay did not notice the foreign messages:\n%s", out)
	}
	if !strings.Contains(out, "skipped events the slot sent again") {
		t.Errorf("the restarted relay was not sent the unconfirmed events again; the test proves nothing:\n%s", out)
	}
	all := e.streamEvents()
	if uint64(len(all)) < held+2 || all[held].ID != foreign.ID || all[held+1].ID != all[0].ID {
		t.Fatalf("stream messages %d and %d are not the foreign and the re-published ones", held+1, held+2)
	}
	got := append(all[:held:held], all[held+2:]...)
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
}
