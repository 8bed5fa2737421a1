package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/jetcqrs/jetcqrs/commandapi"
)

func TestFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want Config
	}{
		{"nothing set: off", nil, Config{Exporter: ExporterNone}},
		{"an endpoint turns OTLP on", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			Config{Exporter: ExporterOTLP}},
		{"a traces endpoint too", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
			Config{Exporter: ExporterOTLP}},
		{"the exporter named wins", map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			Config{Exporter: ExporterConsole}},
		{"none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			Config{Exporter: ExporterNone}},
		{"disabled SDK", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
			Config{Exporter: ExporterNone}},
		{"protocol", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			Config{Exporter: ExporterOTLP, Protocol: ProtocolGRPC}},
		{"the traces protocol wins", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, Config{Exporter: ExporterOTLP, Protocol: ProtocolHTTP}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := FromEnv(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if got != tc.want {
				t.Fatalf("FromEnv = %+v, want %+v", got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, bad := range []Config{{Exporter: "zipkin"}, {Exporter: ExporterOTLP, Protocol: "http/json"}} {
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "OTEL_") {
			t.Errorf("Validate(%+v) = %v, want an error naming the variable", bad, err)
		}
	}
}

// With tracing off the decorators are not there at all: the components
// work on what they were given.
func TestOffStepsAside(t *testing.T) {
	t.Parallel()
	tr, err := Setup(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Fatal("tracing is on without an exporter")
	}
	var cmds commandapi.Commands = tracedCommands{}
	if tr.Commands(cmds) != cmds {
		t.Error("Commands decorated with tracing off")
	}
	if tr.Publisher(nil) != nil || tr.Applier("orders", nil) != nil {
		t.Error("Publisher or Applier decorated with tracing off")
	}
}

// A log line of traced work carries its trace and span ids; one without a
// span carries neither.
func TestLogHandlerAddsTraceIDs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	tr, err := Setup(context.Background(), Config{Exporter: ExporterConsole, Console: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	log := slog.New(LogHandler(slog.NewTextHandler(&buf, nil))).With("component", "test")
	ctx, span := tr.Tracer("test").Start(context.Background(), "work")
	log.InfoContext(ctx, "inside")
	span.End()
	log.Info("outside")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %q", buf.String())
	}
	sc := span.SpanContext()
	if !strings.Contains(lines[0], "trace_id="+sc.TraceID().String()) || !strings.Contains(lines[0], "span_id="+sc.SpanID().String()) {
		t.Errorf("traced line %q lacks trace_id/span_id", lines[0])
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("untraced line %q has a trace_id", lines[1])
	}
	if got := TraceParent(ctx); got != "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01" {
		t.Errorf("TraceParent = %q", got)
	}
	if !SpanContextOf(TraceParent(ctx)).Equal(sc.WithRemote(true)) {
		t.Errorf("SpanContextOf(TraceParent) = %+v, want %+v", SpanContextOf(TraceParent(ctx)), sc)
	}
}
