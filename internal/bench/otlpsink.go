package bench

import (
	"context"
	"net"
	"sync/atomic"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/jetcqrs/jetcqrs/internal/telemetry"
)

// OTLPSink is an OTLP/gRPC trace receiver on a loopback port that counts
// the spans it is sent and keeps none: the far end of a traced benchmark,
// so that the figures include the whole export path.
type OTLPSink struct {
	collectortrace.UnimplementedTraceServiceServer
	srv   *grpc.Server
	addr  string
	spans atomic.Int64
}

// StartOTLPSink listens on 127.0.0.1.
func StartOTLPSink() (*OTLPSink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &OTLPSink{srv: grpc.NewServer(), addr: l.Addr().String()}
	collectortrace.RegisterTraceServiceServer(s.srv, s)
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// Export counts the request's spans.
func (s *OTLPSink) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			s.spans.Add(int64(len(ss.GetSpans())))
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Tracing is a tracer provider that exports to the sink, as the binary's
// does with OTEL_EXPORTER_OTLP_PROTOCOL=grpc.
func (s *OTLPSink) Tracing(ctx context.Context) (*telemetry.Tracing, error) {
	return telemetry.Setup(ctx, telemetry.Config{Exporter: telemetry.ExporterOTLP, Protocol: telemetry.ProtocolGRPC,
		Endpoint: "http://" + s.addr, ServiceName: "jetcqrs-bench"})
}

// Spans is how many spans the sink received.
func (s *OTLPSink) Spans() int64 { return s.spans.Load() }

// Stop closes the listener.
func (s *OTLPSink) Stop() { s.srv.Stop() }
