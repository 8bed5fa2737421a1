package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event is one outbox row on its way to the stream.
type Event struct {
	// Seq is the row's outbox_events.seq (insertion order).
	Seq int64
	// ID is the event id in PostgreSQL's text form (lowercase UUID); it is
	// the stream's deduplication key.
	ID               string
	AggregateType    string
	AggregateID      string
	AggregateVersion int64
	EventType        string
	SchemaVersion    int
	OccurredAt       time.Time
	// TraceParent is headers ->> 'traceparent', or "".
	TraceParent string
	// Payload is the payload column as JSON text.
	Payload []byte
	// CommitLSN is the end of the commit record of the event's transaction
	// (CDC); zero in poll mode.
	CommitLSN LSN
	// TxIndex is the event's index in its transaction (CDC).
	TxIndex int
	// CommitTime is when the event's transaction committed (CDC). In poll
	// mode the commit time is unknown and OccurredAt, taken just before the
	// commit, stands in for it.
	CommitTime time.Time
}

// Publisher is the event stream the relay appends to. The relay must be the
// stream's only writer: it learns from the stream what it already appended.
type Publisher interface {
	// Last returns the sequence of the stream's last message, 0 for a
	// stream that never held one, and that message's commit position (what
	// Event.Position gave when it was published), "" when it has none.
	Last(ctx context.Context) (seq uint64, position string, err error)
	// LastPosition returns the sequence and commit position of the newest
	// message after sequence after that the relay appended with a commit
	// position, passing over messages appended otherwise (re-published by
	// hand, or by another writer); 0 and "" when there is none.
	LastPosition(ctx context.Context, after uint64) (seq uint64, position string, err error)
	// EventIDs calls fn in stream order with the sequence and event id of
	// each message stored after sequence after, up to through.
	EventIDs(ctx context.Context, after, through uint64, fn func(seq uint64, id string) error) error
	// PublishBatch appends events in order, events[i] only as sequence
	// after+i+1, and returns how many of them, counted from the first, the
	// stream has acknowledged. It may return acked < len(events) only with
	// a non-nil error; the stream then holds a prefix of events (perhaps
	// longer than acked, after an unknown outcome) and never one of them
	// after an event it refused. It returns when every event is
	// acknowledged, one failed, or ctx ended. An event that can never be
	// stored (it breaks the stream's envelope contract) is reported with an
	// error matching ErrEventRejected.
	PublishBatch(ctx context.Context, after uint64, events []Event) (acked int, err error)
	// PublishStream is PublishBatch over the concatenation of the batches
	// received from batches, pipelined: it publishes each batch as it
	// arrives, without waiting for the acknowledgements of the ones before
	// (the first event of the whole sequence only as sequence after+1, the
	// next as after+2, and so on). It calls acked, on the calling goroutine,
	// once per acknowledged event of the sequence's acknowledged prefix, in
	// order. It returns when batches is closed and every event is
	// acknowledged (nil), or after the first failure, once no publish is in
	// flight any more; from then on it receives no more batches. The
	// stream then holds a prefix of the sequence, as after PublishBatch.
	PublishStream(ctx context.Context, after uint64, batches <-chan []Event, acked func()) (int, error)
}

// ErrEventRejected is what a Publisher's error matches when retrying cannot
// help: the event at index acked can never be stored. Skipping it would lose
// an event and break its aggregate's order, so the relay stops (Run returns
// the error) and an operator must repair the outbox row.
var ErrEventRejected = errors.New("relay: event rejected by the stream")

// Position is where the event stands in the write store's commit order, as
// the CDC relay read it: "<commit LSN>:<index in its transaction>", e.g.
// "16/B374D848:2". It is "" for events read by a query (backfill, polling),
// whose commit LSN is unknown. Published with each event, it tells a
// restarted relay how far its slot's replay is already in the stream.
func (e Event) Position() string {
	if e.CommitLSN == 0 {
		return ""
	}
	return e.CommitLSN.String() + ":" + strconv.Itoa(e.TxIndex)
}

// position is a parsed Event.Position; the zero value precedes every event.
type position struct {
	lsn   LSN
	index int
}

func parsePosition(s string) (position, bool) {
	lsnText, idx, ok := strings.Cut(s, ":")
	if !ok {
		return position{}, false
	}
	lsn, err := parseLSN(lsnText)
	i, ierr := strconv.Atoi(idx)
	if err != nil || ierr != nil || i < 0 {
		return position{}, false
	}
	return position{lsn: lsn, index: i}, true
}

// before reports whether p comes before e in commit order.
func (p position) before(e Event) bool {
	return e.CommitLSN > p.lsn || e.CommitLSN == p.lsn && e.TxIndex > p.index
}

// LSN is a PostgreSQL WAL position.
type LSN uint64

// String formats l as PostgreSQL does, e.g. 16/B374D848.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }
