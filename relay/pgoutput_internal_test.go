package relay

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
	"time"
)

// This file encodes pgoutput protocol-2 messages the way PostgreSQL 15
// sends them, for the decoder's unit and fuzz tests.

// outboxColumnsInTableOrder is outbox_events as the migration creates it.
var outboxColumnsInTableOrder = []string{
	"seq", "id", "aggregate_type", "aggregate_id", "aggregate_version", "event_type", "schema_version",
	"payload", "headers", "occurred_at", "txid", "published_at",
}

type pgmsg []byte

func (m pgmsg) u8(v byte) pgmsg    { return append(m, v) }
func (m pgmsg) u16(v uint16) pgmsg { return binary.BigEndian.AppendUint16(m, v) }
func (m pgmsg) u32(v uint32) pgmsg { return binary.BigEndian.AppendUint32(m, v) }
func (m pgmsg) u64(v uint64) pgmsg { return binary.BigEndian.AppendUint64(m, v) }
func (m pgmsg) str(s string) pgmsg { return append(append(m, s...), 0) }
func (m pgmsg) xid(inStream bool, xid uint32) pgmsg {
	if inStream {
		return m.u32(xid)
	}
	return m
}

func pgTime(t time.Time) uint64 {
	const y2k = 946684800 * 1000000
	return uint64(t.UnixMicro() - y2k)
}

func msgRelation(inStream bool, xid, relID uint32, name string, cols []string) []byte {
	m := pgmsg{'R'}.xid(inStream, xid).u32(relID).str("public").str(name).u8('d').u16(uint16(len(cols)))
	for _, c := range cols {
		m = m.u8(0).str(c).u32(25).u32(0xffffffff)
	}
	return m
}

// tupleText encodes a text-format tuple; a nil value is NULL.
func tupleText(vals []*string) []byte {
	m := pgmsg{}.u16(uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			m = m.u8('n')
			continue
		}
		m = m.u8('t').u32(uint32(len(*v)))
		m = append(m, *v...)
	}
	return m
}

func msgInsert(inStream bool, xid, relID uint32, tuple []byte) []byte {
	return append(pgmsg{'I'}.xid(inStream, xid).u32(relID).u8('N'), tuple...)
}

func msgBegin(final LSN, at time.Time, xid uint32) []byte {
	return pgmsg{'B'}.u64(uint64(final)).u64(pgTime(at)).u32(xid)
}

func msgCommit(commit, end LSN, at time.Time) []byte {
	return pgmsg{'C'}.u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgTime(at))
}

func msgStreamStart(xid uint32, first bool) []byte {
	f := byte(0)
	if first {
		f = 1
	}
	return pgmsg{'S'}.u32(xid).u8(f)
}

func msgStreamStop() []byte { return []byte{'E'} }

func msgStreamCommit(xid uint32, commit, end LSN, at time.Time) []byte {
	return pgmsg{'c'}.u32(xid).u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgTime(at))
}

func msgStreamAbort(xid, subxid uint32) []byte { return pgmsg{'A'}.u32(xid).u32(subxid) }

func msgLogical(transactional bool, lsn LSN, prefix string, content []byte) []byte {
	f := byte(0)
	if transactional {
		f = 1
	}
	m := pgmsg{'M'}.u8(f).u64(uint64(lsn)).str(prefix).u32(uint32(len(content)))
	return append(m, content...)
}

// outboxValues renders e as pgoutput renders an outbox row (ISO DateStyle,
// UTC), in table column order.
func outboxValues(e Event) []*string {
	s := func(v string) *string { return &v }
	headers := "{}"
	if e.TraceParent != "" {
		b, _ := json.Marshal(map[string]string{"traceparent": e.TraceParent, "actor": "admin-1"})
		headers = string(b)
	}
	return []*string{
		s(strconv.FormatInt(e.Seq, 10)),
		s(e.ID),
		s(e.AggregateType),
		s(e.AggregateID),
		s(strconv.FormatInt(e.AggregateVersion, 10)),
		s(e.EventType),
		s(strconv.Itoa(e.SchemaVersion)),
		s(string(e.Payload)),
		s(headers),
		s(e.OccurredAt.UTC().Format("2006-01-02 15:04:05.999999999-07")),
		s("748"),
		nil,
	}
}

func sampleEvent(seq int64) Event {
	return Event{
		Seq:              seq,
		ID:               "0190f1a2-7b3c-7d4e-8f50-" + strconv.FormatInt(100000000000+seq, 10),
		AggregateType:    "order",
		AggregateID:      "6c1f2c4e-0b7e-4a53-9b8e-4f3f1b2a9c0d",
		AggregateVersion: seq,
		EventType:        "OrderPlaced",
		SchemaVersion:    1,
		OccurredAt:       time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC),
		TraceParent:      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Payload:          []byte(`{"order_id": "6c1f2c4e", "total_cents": 1299}`),
	}
}
