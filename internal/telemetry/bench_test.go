package telemetry

import (
	"context"
	"fmt"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/jetcqrs/jetcqrs/projections"
)

type nopStore struct{}

func (nopStore) Apply(context.Context, []projections.Envelope) error { return nil }

// BenchmarkApplier measures what tracing adds to applying a batch of 64
// events, per batch: off (the store itself, undecorated), and on with every
// span recorded and handed to a batching exporter that drops them.
func BenchmarkApplier(b *testing.B) {
	batch := make([]projections.Envelope, 64)
	for i := range batch {
		batch[i] = projections.Envelope{Seq: uint64(i + 1), ID: fmt.Sprint(i), EventType: "OrderPlaced",
			TraceParent: fmt.Sprintf("00-%032x-%016x-01", i+1, i+1)}
	}
	on := &Tracing{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	on.provider, on.sdk = tp, tp
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	for _, tc := range []struct {
		name string
		t    *Tracing
	}{{"off", Off()}, {"on", on}} {
		a := tc.t.Applier("orders", nopStore{})
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Apply(context.Background(), batch)
			}
		})
	}
}
