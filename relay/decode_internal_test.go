package relay

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

const outboxRelID = 16390

func outboxDecoder(t testing.TB) *outboxRelation {
	t.Helper()
	msg, err := pglogrepl.ParseV2(msgRelation(false, 0, outboxRelID, outboxTable, outboxColumnsInTableOrder), false)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := newOutboxRelation(&msg.(*pglogrepl.RelationMessageV2).RelationMessage)
	if err != nil || rel == nil {
		t.Fatalf("newOutboxRelation: %v, %v", rel, err)
	}
	return rel
}

func TestDecodeInsert(t *testing.T) {
	t.Parallel()
	rel := outboxDecoder(t)
	want := sampleEvent(42)
	for _, inStream := range []bool{false, true} {
		xid, relID, tuple, err := parseInsert(msgInsert(inStream, 777, outboxRelID, tupleText(outboxValues(want))), inStream)
		if err != nil {
			t.Fatal(err)
		}
		if relID != outboxRelID || (inStream && xid != 777) {
			t.Errorf("inStream %v: xid %d relid %d", inStream, xid, relID)
		}
		got, err := rel.decode(tuple)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decode:\n got %+v\nwant %+v", got, want)
		}
	}

	noTrace := sampleEvent(1)
	noTrace.TraceParent = ""
	vals := outboxValues(noTrace)
	got, err := rel.decode(tupleText(vals))
	if err != nil || got.TraceParent != "" {
		t.Errorf("headers {}: traceparent %q, err %v", got.TraceParent, err)
	}

	bad := func(mutate func(v []*string) []*string) []byte {
		return tupleText(mutate(outboxValues(sampleEvent(7))))
	}
	str := func(s string) *string { return &s }
	tests := []struct {
		name  string
		tuple []byte
		want  string
	}{
		{"null id", bad(func(v []*string) []*string { v[1] = nil; return v }), "id is NULL"},
		{"id not uuid", bad(func(v []*string) []*string { v[1] = str("nope"); return v }), "not a UUID"},
		{"version not int", bad(func(v []*string) []*string { v[4] = str("x"); return v }), "aggregate_version"},
		{"schema too big", bad(func(v []*string) []*string { v[6] = str("99999999999"); return v }), "schema_version"},
		{"infinite time", bad(func(v []*string) []*string { v[9] = str("infinity"); return v }), "occurred_at"},
		{"bad headers", bad(func(v []*string) []*string { v[8] = str(`{"traceparent": `); return v }), "headers"},
		{"column missing", bad(func(v []*string) []*string { return v[:11] }), "11 columns"},
		{"truncated", tupleText(outboxValues(sampleEvent(7)))[:40], "exceeds the message"},
		{"cut at a column", tupleText(outboxValues(sampleEvent(7)))[:2], "column 0 truncated"},
		{"trailing", append(tupleText(outboxValues(sampleEvent(7))), 0), "trailing"},
		{"binary", []byte{0, 1, 'b', 0, 0, 0, 0}, "1 columns"},
	}
	for _, tt := range tests {
		_, err := rel.decode(tt.tuple)
		if !errors.Is(err, errDecode) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want errDecode mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestNewOutboxRelation(t *testing.T) {
	t.Parallel()
	other := pglogrepl.RelationMessage{RelationName: "orders"}
	if rel, err := newOutboxRelation(&other); rel != nil || err != nil {
		t.Errorf("other table: %v, %v; want nil, nil", rel, err)
	}
	missing := pglogrepl.RelationMessage{Namespace: "public", RelationName: outboxTable}
	for _, c := range outboxColumnsInTableOrder {
		if c != "occurred_at" {
			missing.Columns = append(missing.Columns, &pglogrepl.RelationMessageColumn{Name: c})
		}
	}
	if _, err := newOutboxRelation(&missing); !errors.Is(err, errDecode) || !strings.Contains(err.Error(), "occurred_at") {
		t.Errorf("missing column: %v", err)
	}
	// A column added later, anywhere, is ignored.
	extra := pglogrepl.RelationMessage{RelationName: outboxTable}
	for _, c := range append([]string{"tenant"}, outboxColumnsInTableOrder...) {
		extra.Columns = append(extra.Columns, &pglogrepl.RelationMessageColumn{Name: c})
	}
	rel, err := newOutboxRelation(&extra)
	if err != nil {
		t.Fatal(err)
	}
	tenant := "acme"
	got, err := rel.decode(tupleText(append([]*string{&tenant}, outboxValues(sampleEvent(3))...)))
	if err != nil || got.ID != sampleEvent(3).ID {
		t.Errorf("extra column: %+v, %v", got, err)
	}
}

func TestParseTimestamptz(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2025-03-04 05:06:07.123456+00", time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)},
		{"2025-03-04 05:06:07+00", time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)},
		{"2025-03-04 10:36:07.5+05:30", time.Date(2025, 3, 4, 5, 6, 7, 500000000, time.UTC)},
		{"2025-03-04 05:06:07-03", time.Date(2025, 3, 4, 8, 6, 7, 0, time.UTC)},
		{"1892-01-01 00:00:00+00:17:30", time.Date(1891, 12, 31, 23, 42, 30, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := parseTimestamptz([]byte(tt.in))
		if err != nil || !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("%q: %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "infinity", "-infinity", "2025-03-04 05:06:07 BC+00", "2025-03-04T05:06:07Z", "Tue Mar 04 05:06:07 2025 UTC"} {
		if _, err := parseTimestamptz([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// FuzzDecodeInsert feeds arbitrary bytes to the Insert decoder: it must
// never panic, fail only with errDecode, and whatever it accepts must
// survive a re-encoding unchanged.
func FuzzDecodeInsert(f *testing.F) {
	e := sampleEvent(1)
	f.Add(msgInsert(false, 0, outboxRelID, tupleText(outboxValues(e))), false)
	f.Add(msgInsert(true, 9, outboxRelID, tupleText(outboxValues(e))), true)
	e.TraceParent, e.Payload = "", []byte(`[]`)
	f.Add(msgInsert(false, 0, outboxRelID, tupleText(outboxValues(e))), false)
	f.Add([]byte{'I'}, true)
	f.Add([]byte{'I', 0, 0, 64, 6, 'N', 0, 12}, false)
	rel := outboxDecoder(f)
	f.Fuzz(func(t *testing.T, msg []byte, inStream bool) {
		_, _, tuple, err := parseInsert(msg, inStream)
		if err != nil {
			if !errors.Is(err, errDecode) {
				t.Fatalf("parseInsert error %v is not errDecode", err)
			}
			return
		}
		ev, err := rel.decode(tuple)
		if err != nil {
			if !errors.Is(err, errDecode) {
				t.Fatalf("decode error %v is not errDecode", err)
			}
			return
		}
		if !isUUID([]byte(ev.ID)) || ev.OccurredAt.Location() != time.UTC {
			t.Fatalf("accepted an invalid event: %+v", ev)
		}
		again, err := rel.decode(tupleText(outboxValues(ev)))
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", ev, err)
		}
		if !reflect.DeepEqual(again, ev) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, ev)
		}
	})
}
