package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
)

// outboxTable is the table the relay reads; its columns below are the
// contract between the write store and the relay.
const outboxTable = "outbox_events"

const (
	colSeq = iota
	colID
	colAggregateType
	colAggregateID
	colAggregateVersion
	colEventType
	colSchemaVersion
	colPayload
	colHeaders
	colOccurredAt
	numColumns
)

var columnNames = [numColumns]string{
	colSeq:              "seq",
	colID:               "id",
	colAggregateType:    "aggregate_type",
	colAggregateID:      "aggregate_id",
	colAggregateVersion: "aggregate_version",
	colEventType:        "event_type",
	colSchemaVersion:    "schema_version",
	colPayload:          "payload",
	colHeaders:          "headers",
	colOccurredAt:       "occurred_at",
}

// errDecode marks an outbox row or message the relay cannot decode. It is
// permanent: skipping the row would lose an event, so the relay stops.
var errDecode = errors.New("relay: decode")

func decodeErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errDecode}, args...)...)
}

// outboxRelation decodes the insert tuples of outbox_events using the column
// layout of its latest pgoutput Relation message: columns are found by name,
// so columns added to the table later are ignored.
type outboxRelation struct {
	// field[i] is the Event field of tuple column i, or -1.
	field []int8
}

// newOutboxRelation returns the decoder for rel, nil when rel is another
// table, or an error when rel is the outbox but lacks a contract column.
func newOutboxRelation(rel *pglogrepl.RelationMessage) (*outboxRelation, error) {
	if rel.RelationName != outboxTable {
		return nil, nil
	}
	r := &outboxRelation{field: make([]int8, len(rel.Columns))}
	var seen [numColumns]bool
	for i, c := range rel.Columns {
		r.field[i] = -1
		for f, name := range columnNames {
			if c.Name == name {
				r.field[i] = int8(f)
				seen[f] = true
			}
		}
	}
	for f, ok := range seen {
		if !ok {
			return nil, decodeErrorf("relation %s.%s has no column %q", rel.Namespace, rel.RelationName, columnNames[f])
		}
	}
	return r, nil
}

// parseInsert splits a pgoutput Insert message (type byte included) into the
// transaction id (in a streamed transaction only), the relation id and the
// new tuple.
func parseInsert(msg []byte, inStream bool) (xid, relID uint32, tuple []byte, err error) {
	if len(msg) < 1 || msg[0] != byte(pglogrepl.MessageTypeInsert) {
		return 0, 0, nil, decodeErrorf("not an Insert message")
	}
	rest := msg[1:]
	if inStream {
		if len(rest) < 4 {
			return 0, 0, nil, decodeErrorf("Insert: truncated xid")
		}
		xid, rest = binary.BigEndian.Uint32(rest), rest[4:]
	}
	if len(rest) < 5 {
		return 0, 0, nil, decodeErrorf("Insert: truncated header")
	}
	relID = binary.BigEndian.Uint32(rest)
	if rest[4] != 'N' {
		return 0, 0, nil, decodeErrorf("Insert: tuple kind %q, want 'N'", rest[4])
	}
	return xid, relID, rest[5:], nil
}

// decode converts the text-format tuple of an outbox insert into an Event.
func (r *outboxRelation) decode(tuple []byte) (Event, error) {
	if len(tuple) < 2 {
		return Event{}, decodeErrorf("tuple: truncated column count")
	}
	n := int(binary.BigEndian.Uint16(tuple))
	if n != len(r.field) {
		return Event{}, decodeErrorf("tuple has %d columns, relation has %d", n, len(r.field))
	}
	var vals [numColumns][]byte
	var present [numColumns]bool
	p := 2
	for i := range n {
		if p >= len(tuple) {
			return Event{}, decodeErrorf("tuple: column %d truncated", i)
		}
		kind := tuple[p]
		p++
		var val []byte
		switch kind {
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeText:
			if len(tuple)-p < 4 {
				return Event{}, decodeErrorf("tuple: column %d: truncated length", i)
			}
			l := binary.BigEndian.Uint32(tuple[p:])
			p += 4
			if uint64(l) > uint64(len(tuple)-p) {
				return Event{}, decodeErrorf("tuple: column %d: length %d exceeds the message", i, l)
			}
			val = tuple[p : p+int(l)]
			p += int(l)
		default:
			// 'u' (unchanged TOAST) cannot occur in an insert, and the
			// relay never asks for binary values.
			return Event{}, decodeErrorf("tuple: column %d: unexpected kind %q", i, kind)
		}
		if f := r.field[i]; f >= 0 {
			vals[f], present[f] = val, kind == pglogrepl.TupleDataTypeText
		}
	}
	if p != len(tuple) {
		return Event{}, decodeErrorf("tuple: %d trailing bytes", len(tuple)-p)
	}
	for f, ok := range present {
		if !ok {
			return Event{}, decodeErrorf("column %s is NULL", columnNames[f])
		}
	}
	return eventFromText(vals)
}

// eventFromText builds an Event from the columns' text forms, as pgoutput
// and the polling query both produce them.
func eventFromText(v [numColumns][]byte) (Event, error) {
	var e Event
	var err error
	if e.Seq, err = strconv.ParseInt(string(v[colSeq]), 10, 64); err != nil {
		return Event{}, decodeErrorf("seq %q: %v", v[colSeq], err)
	}
	if !isUUID(v[colID]) {
		return Event{}, decodeErrorf("seq %d: id %q is not a UUID", e.Seq, v[colID])
	}
	e.ID = string(v[colID])
	e.AggregateType = string(v[colAggregateType])
	e.AggregateID = string(v[colAggregateID])
	if e.AggregateVersion, err = strconv.ParseInt(string(v[colAggregateVersion]), 10, 64); err != nil {
		return Event{}, decodeErrorf("seq %d: aggregate_version %q: %v", e.Seq, v[colAggregateVersion], err)
	}
	e.EventType = string(v[colEventType])
	sv, err := strconv.ParseInt(string(v[colSchemaVersion]), 10, 32)
	if err != nil {
		return Event{}, decodeErrorf("seq %d: schema_version %q: %v", e.Seq, v[colSchemaVersion], err)
	}
	e.SchemaVersion = int(sv)
	if e.OccurredAt, err = parseTimestamptz(v[colOccurredAt]); err != nil {
		return Event{}, decodeErrorf("seq %d: occurred_at: %v", e.Seq, err)
	}
	if e.TraceParent, err = traceParent(v[colHeaders]); err != nil {
		return Event{}, decodeErrorf("seq %d: headers: %v", e.Seq, err)
	}
	e.Payload = bytes.Clone(v[colPayload])
	return e, nil
}

// traceParent extracts headers ->> 'traceparent' from the headers JSON.
func traceParent(headers []byte) (string, error) {
	if !bytes.Contains(headers, []byte(`"traceparent"`)) {
		return "", nil
	}
	// Fast path for what PostgreSQL renders from jsonb: `"traceparent": "…"`
	// with a value of hex digits and dashes (no escapes). Anything else takes
	// the general path below.
	if i := bytes.Index(headers, []byte(`"traceparent": "`)); i >= 0 {
		v := headers[i+len(`"traceparent": "`):]
		if j := bytes.IndexByte(v, '"'); j >= 0 && plainTraceValue(v[:j]) {
			return string(v[:j]), nil
		}
	}
	// Exact key match, as ->> does (encoding/json's struct fields would
	// match case-insensitively).
	var h map[string]json.RawMessage
	if err := json.Unmarshal(headers, &h); err != nil {
		return "", err
	}
	var tp string
	if raw, ok := h["traceparent"]; ok && json.Unmarshal(raw, &tp) != nil {
		// ->> renders any JSON value as text; a non-string traceparent is
		// not a trace context, so it is dropped rather than guessed at.
		return "", nil
	}
	return tp, nil
}

func isUUID(s []byte) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// parseTimestamptz parses timestamptz output in the ISO DateStyle the
// relay's sessions use, e.g. "2024-05-01 12:34:56.123456+00" or with a
// "+05:30" offset. Infinite and BC values are errors: no event occurs then.
func parseTimestamptz(b []byte) (time.Time, error) {
	s := string(b)
	// Fractional seconds are accepted after the seconds field by every
	// layout when parsing.
	for _, layout := range []string{"2006-01-02 15:04:05-07", "2006-01-02 15:04:05-07:00", "2006-01-02 15:04:05-07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an ISO timestamptz", s)
}

// plainTraceValue reports whether b needs no JSON unescaping: lowercase hex
// digits and dashes, as a W3C traceparent is written.
func plainTraceValue(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}
