package nats

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func validEvent() Event {
	return Event{
		ID:               "0b9e6a4e-2f1c-4b8e-9d3a-7c1f2e4d5a6b",
		AggregateType:    "order",
		AggregateID:      "order-0001",
		AggregateVersion: 3,
		EventType:        "OrderPlaced",
		SchemaVersion:    2,
		OccurredAt:       time.Date(2025, 11, 26, 9, 54, 1, 123456789, time.FixedZone("CET", 3600)),
		TraceParent:      testTraceParent,
		Payload:          []byte(`{"order_id":"order-0001","lines":[{"sku":"SKU-1","qty":2}]}`),
	}
}

// wireHeaders encodes and parses h the way a message travels: nats.go's
// header block format, parsed back by nats.go.
func wireHeaders(t testing.TB, h natsgo.Header) natsgo.Header {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("NATS/1.0\r\n")
	for k, vs := range h {
		for _, v := range vs {
			b.WriteString(k + ": " + strings.NewReplacer("\r", " ", "\n", " ").Replace(textproto.TrimString(v)) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	out, err := natsgo.DecodeHeadersMsg(b.Bytes())
	if err != nil {
		t.Fatalf("DecodeHeadersMsg: %v", err)
	}
	return out
}

func TestMsgHeadersAndSubject(t *testing.T) {
	t.Parallel()
	e := validEvent()
	m, err := e.Msg(16)
	if err != nil {
		t.Fatalf("Msg: %v", err)
	}
	if want := Subject("order", Partition("order-0001", 16), "OrderPlaced"); m.Subject != want {
		t.Errorf("subject = %q, want %q", m.Subject, want)
	}
	want := map[string]string{
		"Nats-Msg-Id":               e.ID,
		"Jetcqrs-Event-Type":        "OrderPlaced",
		"Jetcqrs-Aggregate-Type":    "order",
		"Jetcqrs-Aggregate-Id":      "order-0001",
		"Jetcqrs-Aggregate-Version": "3",
		"Jetcqrs-Schema-Version":    "2",
		"Jetcqrs-Occurred-At":       "2025-11-26T08:54:01.123456789Z",
		"traceparent":               testTraceParent,
	}
	got := map[string]string{}
	for k, v := range m.Header {
		got[k] = strings.Join(v, ",")
	}
	if !maps.Equal(got, want) {
		t.Errorf("headers = %v\nwant %v", got, want)
	}
	if !bytes.Equal(m.Data, e.Payload) {
		t.Errorf("data = %s, want the payload", m.Data)
	}

	e.TraceParent = ""
	m, _ = e.Msg(16)
	if _, ok := m.Header[HeaderTraceParent]; ok {
		t.Error("traceparent header sent for an event without one")
	}
	e.TraceParent = "garbage"
	m, err = e.Msg(16)
	if err != nil {
		t.Fatalf("Msg with a malformed traceparent: %v (want it dropped, not fatal)", err)
	}
	if _, ok := m.Header[HeaderTraceParent]; ok {
		t.Error("malformed traceparent was sent")
	}
}

func TestMsgDecodeMsgRoundTrip(t *testing.T) {
	t.Parallel()
	withoutTrace := validEvent()
	withoutTrace.TraceParent = ""
	unicodeID := validEvent()
	unicodeID.AggregateID = "Größe 42 / ü:x"
	utc := validEvent()
	utc.OccurredAt = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, e := range map[string]Event{"full": validEvent(), "no trace": withoutTrace, "unicode id": unicodeID, "whole seconds": utc} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := e.Msg(16)
			if err != nil {
				t.Fatalf("Msg: %v", err)
			}
			got, err := DecodeMsg(m.Subject, wireHeaders(t, m.Header), m.Data)
			if err != nil {
				t.Fatalf("DecodeMsg: %v", err)
			}
			assertSameEvent(t, got, e)
		})
	}
}

func assertSameEvent(t testing.TB, got, want Event) {
	t.Helper()
	if !got.OccurredAt.Equal(want.OccurredAt) || got.OccurredAt.Location() != time.UTC {
		t.Errorf("OccurredAt = %v, want %v in UTC", got.OccurredAt, want.OccurredAt)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("Payload = %s, want %s", got.Payload, want.Payload)
	}
	got.OccurredAt, want.OccurredAt = time.Time{}, time.Time{}
	got.Payload, want.Payload = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant    %+v", got, want)
	}
}

func TestMsgRejectsInvalidEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Event)
		field  string
	}{
		{"empty id", func(e *Event) { e.ID = "" }, HeaderMsgID},
		{"id not a uuid", func(e *Event) { e.ID = "evt-1" }, HeaderMsgID},
		{"id with braces", func(e *Event) { e.ID = "{0b9e6a4e-2f1c-4b8e-9d3a-7c1f2e4d5a6}" }, HeaderMsgID},
		{"empty aggregate type", func(e *Event) { e.AggregateType = "" }, HeaderAggregateType},
		{"dotted aggregate type", func(e *Event) { e.AggregateType = "order.v2" }, HeaderAggregateType},
		{"wildcard aggregate type", func(e *Event) { e.AggregateType = "*" }, HeaderAggregateType},
		{"spaced event type", func(e *Event) { e.EventType = "Order Placed" }, HeaderEventType},
		{"gt event type", func(e *Event) { e.EventType = "Order>" }, HeaderEventType},
		{"empty aggregate id", func(e *Event) { e.AggregateID = "" }, HeaderAggregateID},
		{"newline in aggregate id", func(e *Event) { e.AggregateID = "a\r\nNats-Msg-Id: x" }, HeaderAggregateID},
		{"padded aggregate id", func(e *Event) { e.AggregateID = " a" }, HeaderAggregateID},
		{"version zero", func(e *Event) { e.AggregateVersion = 0 }, HeaderAggregateVersion},
		{"schema zero", func(e *Event) { e.SchemaVersion = 0 }, HeaderSchemaVersion},
		{"zero time", func(e *Event) { e.OccurredAt = time.Time{} }, HeaderOccurredAt},
		{"year 10000", func(e *Event) { e.OccurredAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, HeaderOccurredAt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := validEvent()
			tt.mutate(&e)
			_, err := e.Msg(16)
			assertMalformed(t, err, tt.field)
		})
	}
	if _, err := validEvent().Msg(0); err == nil {
		t.Error("Msg(0 partitions) succeeded")
	}
}

func assertMalformed(t testing.TB, err error, field string) {
	t.Helper()
	if !errors.Is(err, ErrMalformedEvent) {
		t.Fatalf("err = %v, want ErrMalformedEvent", err)
	}
	var me *MalformedEventError
	if !errors.As(err, &me) || me.Field != field {
		t.Fatalf("err = %v, want it to name field %q", err, field)
	}
}

func TestDecodeMsgRejectsMalformedEnvelopes(t *testing.T) {
	t.Parallel()
	good, err := validEvent().Msg(16)
	if err != nil {
		t.Fatal(err)
	}
	set := func(k, v string) func(*natsgo.Msg) { return func(m *natsgo.Msg) { m.Header.Set(k, v) } }
	del := func(k string) func(*natsgo.Msg) { return func(m *natsgo.Msg) { m.Header.Del(k) } }
	dup := func(k string) func(*natsgo.Msg) {
		return func(m *natsgo.Msg) { m.Header.Add(k, m.Header.Get(k)) }
	}
	subject := func(s string) func(*natsgo.Msg) { return func(m *natsgo.Msg) { m.Subject = s } }
	tests := []struct {
		name   string
		mutate func(*natsgo.Msg)
		field  string
	}{
		{"subject outside events", subject("orders.order.1.OrderPlaced"), "subject"},
		{"subject too short", subject("events.order.1"), "subject"},
		{"subject too long", subject("events.order.1.OrderPlaced.x"), "subject"},
		{"subject partition not a number", subject("events.order.x.OrderPlaced"), "subject"},
		{"subject partition negative", subject("events.order.-1.OrderPlaced"), "subject"},
		{"subject partition padded", subject("events.order.01.OrderPlaced"), "subject"},
		{"subject aggregate type disagrees", subject("events.product.1.OrderPlaced"), HeaderAggregateType},
		{"subject event type disagrees", subject("events.order.1.OrderPaid"), HeaderEventType},
		{"no headers", func(m *natsgo.Msg) { m.Header = nil }, HeaderMsgID},
		{"msg id missing", del(HeaderMsgID), HeaderMsgID},
		{"msg id invalid", set(HeaderMsgID, "not-a-uuid"), HeaderMsgID},
		{"msg id twice", dup(HeaderMsgID), HeaderMsgID},
		{"event type missing", del(HeaderEventType), HeaderEventType},
		{"event type invalid", set(HeaderEventType, "Order.Placed"), HeaderEventType},
		{"aggregate type missing", del(HeaderAggregateType), HeaderAggregateType},
		{"aggregate type invalid", set(HeaderAggregateType, "or der"), HeaderAggregateType},
		{"aggregate id missing", del(HeaderAggregateID), HeaderAggregateID},
		{"aggregate id empty", set(HeaderAggregateID, ""), HeaderAggregateID},
		{"aggregate id control char", set(HeaderAggregateID, "a\x01"), HeaderAggregateID},
		{"aggregate version missing", del(HeaderAggregateVersion), HeaderAggregateVersion},
		{"aggregate version not a number", set(HeaderAggregateVersion, "three"), HeaderAggregateVersion},
		{"aggregate version zero", set(HeaderAggregateVersion, "0"), HeaderAggregateVersion},
		{"aggregate version signed", set(HeaderAggregateVersion, "+3"), HeaderAggregateVersion},
		{"aggregate version overflow", set(HeaderAggregateVersion, "9223372036854775808"), HeaderAggregateVersion},
		{"aggregate version twice", dup(HeaderAggregateVersion), HeaderAggregateVersion},
		{"schema version missing", del(HeaderSchemaVersion), HeaderSchemaVersion},
		{"schema version negative", set(HeaderSchemaVersion, "-1"), HeaderSchemaVersion},
		{"schema version float", set(HeaderSchemaVersion, "1.0"), HeaderSchemaVersion},
		{"occurred at missing", del(HeaderOccurredAt), HeaderOccurredAt},
		{"occurred at not rfc3339", set(HeaderOccurredAt, "26/11/2025 09:54"), HeaderOccurredAt},
		{"occurred at unix", set(HeaderOccurredAt, "1764150841"), HeaderOccurredAt},
		{"payload not json", func(m *natsgo.Msg) { m.Data = []byte(`{"a":`) }, "payload"},
		{"payload empty", func(m *natsgo.Msg) { m.Data = nil }, "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := &natsgo.Msg{Subject: good.Subject, Header: maps.Clone(good.Header), Data: good.Data}
			for k, v := range m.Header {
				m.Header[k] = append([]string(nil), v...)
			}
			tt.mutate(m)
			e, err := DecodeMsg(m.Subject, m.Header, m.Data)
			assertMalformed(t, err, tt.field)
			if e.ID != "" {
				t.Errorf("DecodeMsg returned a partial event %+v with its error", e)
			}
		})
	}
}

func TestDecodeMsgIgnoresBadTraceParent(t *testing.T) {
	t.Parallel()
	m, err := validEvent().Msg(16)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range []string{
		"garbage",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
	} {
		m.Header.Set(HeaderTraceParent, tp)
		e, err := DecodeMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("traceparent %q made the event undecodable: %v", tp, err)
		}
		if e.TraceParent != "" {
			t.Errorf("traceparent %q decoded as %q, want it ignored", tp, e.TraceParent)
		}
	}
	future := "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
	m.Header.Set(HeaderTraceParent, future)
	if e, _ := DecodeMsg(m.Subject, m.Header, m.Data); e.TraceParent != future {
		t.Errorf("future-version traceparent decoded as %q, want it kept", e.TraceParent)
	}
}

func FuzzDecodeMsg(f *testing.F) {
	good, _ := validEvent().Msg(16)
	var hdr bytes.Buffer
	hdr.WriteString("NATS/1.0\r\n")
	for k, v := range good.Header {
		hdr.WriteString(k + ": " + v[0] + "\r\n")
	}
	hdr.WriteString("\r\n")
	e := validEvent()
	f.Add(good.Subject, hdr.Bytes(), good.Data,
		e.ID, e.AggregateType, e.AggregateID, e.AggregateVersion, e.EventType, e.SchemaVersion, e.OccurredAt.UnixNano(), e.TraceParent, 16)
	f.Add("events.order.1.X", []byte("NATS/1.0\r\nJetcqrs-Aggregate-Version: 1\r\n\r\n"), []byte("{}"),
		"00000000-0000-0000-0000-000000000000", "inventory", " sku 1", int64(1), "InventoryReserved", 1, int64(-1), "", 1)
	f.Add("", []byte{}, []byte{}, "", "", "", int64(0), "", 0, int64(0), "", 0)

	f.Fuzz(func(t *testing.T, subject string, rawHeaders, data []byte,
		id, aggType, aggID string, version int64, eventType string, schema int, nanos int64, traceParent string, partitions int,
	) {
		// Arbitrary input: DecodeMsg must not panic, and an event it
		// accepts must survive being published again unchanged.
		if h, err := natsgo.DecodeHeadersMsg(rawHeaders); err == nil {
			if ev, err := DecodeMsg(subject, h, data); err == nil {
				if _, err := ev.Msg(1); err != nil {
					t.Fatalf("decoded event %+v does not re-encode: %v", ev, err)
				}
			} else if !errors.Is(err, ErrMalformedEvent) {
				t.Fatalf("DecodeMsg error %v does not match ErrMalformedEvent", err)
			}
		}

		// Any event Msg accepts round-trips through the wire format.
		in := Event{
			ID: id, AggregateType: aggType, AggregateID: aggID, AggregateVersion: version,
			EventType: eventType, SchemaVersion: schema, OccurredAt: time.Unix(0, nanos),
			TraceParent: traceParent, Payload: data,
		}
		if partitions < 1 || partitions > MaxPartitions {
			partitions = 16
		}
		m, err := in.Msg(partitions)
		if err != nil {
			if !errors.Is(err, ErrMalformedEvent) {
				t.Fatalf("Msg error %v does not match ErrMalformedEvent", err)
			}
			return
		}
		out, err := DecodeMsg(m.Subject, wireHeaders(t, m.Header), m.Data)
		if !json.Valid(in.Payload) {
			assertMalformed(t, err, "payload")
			return
		}
		if err != nil {
			t.Fatalf("DecodeMsg(Msg(%+v)): %v", in, err)
		}
		if !validTraceParent(in.TraceParent) {
			in.TraceParent = ""
		}
		assertSameEvent(t, out, in)
	})
}
