package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/telemetry"
	"github.com/jetcqrs/jetcqrs/projections/models"
)

// otlpReceiver is an OTLP/gRPC trace collector on a loopback port: what any
// OTLP backend receives from the exporter.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr string

	mu    sync.Mutex
	spans []*tracepb.Span
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: l.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return r
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) all() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			v := kv.GetValue()
			if sv := v.GetStringValue(); sv != "" {
				return sv
			}
			return fmt.Sprint(v.GetIntValue())
		}
	}
	return ""
}

func spanID(s *tracepb.Span) string   { return hex.EncodeToString(s.GetSpanId()) }
func parentID(s *tracepb.Span) string { return hex.EncodeToString(s.GetParentSpanId()) }

// outboxEvent is an event the command committed, as the outbox holds it.
type outboxEvent struct{ id, aggType, eventType, traceParent string }

// expectedProjections names the read models whose consumers take e.
func expectedProjections(e outboxEvent) []string {
	var out []string
	for _, s := range models.Specs() {
		if slices.Contains(s.AggregateTypes, e.aggType) && (len(s.EventTypes) == 0 || slices.Contains(s.EventTypes, e.eventType)) {
			out = append(out, s.Name)
		}
	}
	return out
}

// traceReport checks that the spans of traceID cover the command that
// answered under the caller's span parent, its transaction, the relay's
// publish of each of its events and each projection's apply of each event,
// and the read that waited on its token; it returns what is still missing
// or wrong, "" when the trace is whole.
func traceReport(spans []*tracepb.Span, traceID, parent string, events []outboxEvent) string {
	byID := map[string]*tracepb.Span{}
	var mine []*tracepb.Span
	for _, s := range spans {
		byID[spanID(s)] = s
		if hex.EncodeToString(s.GetTraceId()) == traceID {
			mine = append(mine, s)
		}
	}
	find := func(pred func(*tracepb.Span) bool) *tracepb.Span {
		for _, s := range mine {
			if pred(s) {
				return s
			}
		}
		return nil
	}
	httpSpan := find(func(s *tracepb.Span) bool { return s.GetName() == "POST /v1/orders" })
	if httpSpan == nil {
		return "no HTTP span POST /v1/orders"
	}
	if parentID(httpSpan) != parent || httpSpan.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		return fmt.Sprintf("HTTP span's parent %s kind %v, want the caller's %s, server", parentID(httpSpan), httpSpan.GetKind(), parent)
	}
	cmd := find(func(s *tracepb.Span) bool { return s.GetName() == "command place_order" })
	if cmd == nil || parentID(cmd) != spanID(httpSpan) {
		return "no command span under the HTTP span"
	}
	tx := find(func(s *tracepb.Span) bool { return s.GetName() == "postgres transaction place_order" })
	if tx == nil || parentID(tx) != spanID(cmd) {
		return "no PostgreSQL transaction span under the command span"
	}
	for _, e := range events {
		if want := "00-" + traceID + "-" + spanID(cmd) + "-01"; e.traceParent != want {
			return fmt.Sprintf("event %s carries traceparent %q, want the command span's %q", e.id, e.traceParent, want)
		}
		pub := find(func(s *tracepb.Span) bool {
			return strings.HasPrefix(s.GetName(), "publish ") && attr(s, "jetcqrs.event.id") == e.id
		})
		if pub == nil {
			return "no publish span of event " + e.id + " " + e.eventType
		}
		if parentID(pub) != spanID(cmd) || pub.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER {
			return fmt.Sprintf("publish span of %s has parent %s kind %v, want the command span, producer", e.id, parentID(pub), pub.GetKind())
		}
		for _, proj := range expectedProjections(e) {
			apply := find(func(s *tracepb.Span) bool {
				return attr(s, "jetcqrs.event.id") == e.id && attr(s, "jetcqrs.projection") == proj &&
					s.GetKind() == tracepb.Span_SPAN_KIND_CONSUMER
			})
			if apply == nil {
				return fmt.Sprintf("no apply span of event %s %s by projection %s", e.id, e.eventType, proj)
			}
			if parentID(apply) != spanID(cmd) {
				return fmt.Sprintf("apply span of %s by %s has parent %s, want the command span %s", e.id, proj, parentID(apply), spanID(cmd))
			}
			if len(apply.GetLinks()) != 1 {
				return fmt.Sprintf("apply span of %s by %s has %d links, want its batch", e.id, proj, len(apply.GetLinks()))
			}
			batch := byID[hex.EncodeToString(apply.GetLinks()[0].GetSpanId())]
			if batch == nil || batch.GetName() != "apply batch "+proj {
				return fmt.Sprintf("the batch span that applied %s in %s is missing", e.id, proj)
			}
			linked := slices.ContainsFunc(batch.GetLinks(), func(l *tracepb.Span_Link) bool {
				return hex.EncodeToString(l.GetTraceId()) == traceID && hex.EncodeToString(l.GetSpanId()) == spanID(cmd)
			})
			if !linked {
				return fmt.Sprintf("batch span %s of %s does not link the command's span", spanID(batch), proj)
			}
		}
	}
	read := find(func(s *tracepb.Span) bool { return s.GetName() == "await consistency token" })
	if read == nil {
		return "no span of the read that waited on the consistency token"
	}
	if get := byID[parentID(read)]; get == nil || get.GetName() != "GET /v1/orders/{id}" {
		return "the consistency wait is not under the GET's HTTP span"
	}
	return ""
}

// TestOneTraceFromCommandToEveryReadModel places orders through HTTP with
// tracing exported over OTLP/gRPC to a receiver in the test, and finds one
// trace per order covering the HTTP request, the command, its transaction,
// the relay's publish of each event, every projection's apply of each event
// (linked to its batch) and the read that waited on its consistency token:
// once with the relay running, once with the relay stopped when the order
// is placed and started again (a new process) afterwards.
func TestOneTraceFromCommandToEveryReadModel(t *testing.T) {
	rcv := startOTLPReceiver(t)
	cfg := testConfig(t)
	cfg.Tracing = telemetry.Config{Exporter: telemetry.ExporterOTLP, Protocol: telemetry.ProtocolGRPC,
		Endpoint: "http://" + rcv.addr, ServiceName: "jetcqrs-test"}
	s := startSystem(t, cfg, Components{CommandAPI: true, Projector: true, QueryAPI: true})
	relayProc := startPeer(t, s, Components{Relay: true})
	admin := s.token("ops", domain.RoleAdmin)
	customer := s.token("tess", domain.RoleCustomer)
	s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "TRACE-1", "name": "Traced mug",
		"description": "followed end to end", "category": "kitchen", "price_cents": 700}, nil, nil)
	s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/TRACE-1/adjustments", admin,
		map[string]any{"delta": 10, "reason": "count"}, nil, nil)

	placeAndRead := func(t *testing.T, beforeRead func()) {
		traceID, parent := randomHex(16), randomHex(8)
		tp := map[string]string{"traceparent": "00-" + traceID + "-" + parent + "-01"}
		placed := s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, map[string]any{"user_id": "tess",
			"items": []map[string]any{{"sku": "TRACE-1", "quantity": 1}}, "payment": map[string]string{"method": "card", "token": "t"}},
			tp, nil)
		beforeRead()
		read := maps.Clone(consistency(placed))
		read["traceparent"] = tp["traceparent"]
		// A read that outlasts the wait bound (the relay starting again)
		// answers 503 consistency_timeout; it is asked again.
		for start := time.Now(); ; {
			resp, raw, err := s.send(http.MethodGet, placed.Header.Get("Location"), customer, nil, read, nil)
			if err == nil && resp.StatusCode == http.StatusOK {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("GET the order: %v %s", err, raw)
			}
		}

		rows, err := s.pool.Query(context.Background(), `SELECT id::text, aggregate_type, event_type, headers->>'traceparent'
			FROM outbox_events WHERE headers->>'traceparent' LIKE $1`, "00-"+traceID+"-%")
		if err != nil {
			t.Fatal(err)
		}
		var events []outboxEvent
		for rows.Next() {
			var e outboxEvent
			if err := rows.Scan(&e.id, &e.aggType, &e.eventType, &e.traceParent); err != nil {
				t.Fatal(err)
			}
			events = append(events, e)
		}
		if rows.Err() != nil || len(events) < 2 {
			t.Fatalf("outbox holds %d events of the trace (%v), want OrderPlaced and InventoryReserved", len(events), rows.Err())
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			for _, p := range []*system{s, relayProc} {
				if p.main != nil && p.cancel != nil {
					_ = p.main.tracing.ForceFlush(context.Background())
				}
			}
			missing := traceReport(rcv.all(), traceID, parent, events)
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("trace %s incomplete after 30s: %s", traceID, missing)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	t.Run("relay running", func(t *testing.T) { placeAndRead(t, func() {}) })
	t.Run("relay restarted", func(t *testing.T) {
		relayProc.stop()
		placeAndRead(t, func() { relayProc = startPeer(t, s, Components{Relay: true}) })
	})
}

// A bad OTEL_TRACES_EXPORTER or protocol fails at start, naming the
// variable.
func TestTracingConfigErrorsNameTheVariable(t *testing.T) {
	for variable, env := range map[string]map[string]string{
		"OTEL_TRACES_EXPORTER":        {"OTEL_TRACES_EXPORTER": "zipkin"},
		"OTEL_EXPORTER_OTLP_PROTOCOL": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
	} {
		t.Run(variable, func(t *testing.T) {
			_, err := run(t, env, "version")
			if err == nil || !strings.Contains(err.Error(), variable) {
				t.Fatalf("%v: err = %v, want it to name %s", env, err, variable)
			}
		})
	}
}
