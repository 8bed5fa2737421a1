// Package telemetry owns jetcqrs's tracing: the OpenTelemetry tracer provider
// the standard OTEL_* variables describe, the decorators that continue a
// command's trace across the outbox (the relay's publish, each projection's
// apply), and the slog handler that stamps every log line of traced work with
// its trace and span ids.
//
// Tracing is off unless an exporter is chosen: the provider is then the
// no-op one, whose spans record nothing and cost a context lookup, and the
// decorators step aside entirely.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Exporters OTEL_TRACES_EXPORTER names.
const (
	ExporterNone    = "none"
	ExporterOTLP    = "otlp"
	ExporterConsole = "console"
)

// OTLP protocols OTEL_EXPORTER_OTLP_PROTOCOL names.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Config chooses the exporter. What it leaves out the SDK reads from the
// standard variables itself: the endpoint, headers, TLS and timeout of the
// OTLP exporter (OTEL_EXPORTER_OTLP_*), the sampler (OTEL_TRACES_SAMPLER,
// OTEL_TRACES_SAMPLER_ARG) and the resource (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES).
type Config struct {
	// Exporter is ExporterNone (or ""), ExporterOTLP or ExporterConsole.
	Exporter string
	// Protocol of the OTLP exporter: ProtocolHTTP (the specification's
	// default, also for "") or ProtocolGRPC.
	Protocol string
	// Endpoint, when set, overrides OTEL_EXPORTER_OTLP_ENDPOINT: a URL,
	// http:// for a plain-text connection.
	Endpoint string
	// ServiceName is service.name unless OTEL_SERVICE_NAME sets it.
	ServiceName string
	// Console receives the console exporter's spans (default os.Stdout).
	Console io.Writer
}

// FromEnv reads the variables that choose the exporter, as the SDKs of other
// languages do: OTEL_SDK_DISABLED=true turns tracing off; otherwise
// OTEL_TRACES_EXPORTER names the exporter, and when it is unset an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// turns the OTLP exporter on. Tracing is off by default. lookup is
// os.LookupEnv outside tests.
func FromEnv(lookup func(string) (string, bool)) Config {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	var c Config
	switch {
	case strings.EqualFold(get("OTEL_SDK_DISABLED"), "true"):
		c.Exporter = ExporterNone
	case get("OTEL_TRACES_EXPORTER") != "":
		c.Exporter = strings.ToLower(get("OTEL_TRACES_EXPORTER"))
	case get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
		c.Exporter = ExporterOTLP
	default:
		c.Exporter = ExporterNone
	}
	c.Protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if c.Protocol == "" {
		c.Protocol = get("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	return c
}

// Validate names what is wrong.
func (c Config) Validate() error {
	switch c.Exporter {
	case "", ExporterNone, ExporterOTLP, ExporterConsole:
	default:
		return fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER must be otlp, console or none, got %q", c.Exporter)
	}
	switch c.Protocol {
	case "", ProtocolGRPC, ProtocolHTTP:
	default:
		return fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, got %q", c.Protocol)
	}
	return nil
}

// Tracing is the process's tracer provider.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil while tracing is off
}

// Off is tracing turned off: the no-op provider.
func Off() *Tracing { return &Tracing{provider: noop.NewTracerProvider()} }

// Setup builds the provider cfg describes. Shutdown flushes and stops it.
func Setup(ctx context.Context, cfg Config) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	var err error
	switch cfg.Exporter {
	case "", ExporterNone:
		return Off(), nil
	case ExporterConsole:
		w := cfg.Console
		if w == nil {
			w = os.Stdout
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
	case ExporterOTLP:
		exp, err = otlpExporter(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s exporter: %w", cfg.Exporter, err)
	}
	name := cfg.ServiceName
	if name == "" {
		name = "jetcqrs"
	}
	// Detectors apply in order, later ones winning: OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES override the default name.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithHost(),
		resource.WithAttributes(semconv.ServiceName(name)), resource.WithFromEnv())
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	// The sampler is the SDK's default, or what OTEL_TRACES_SAMPLER says.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{provider: tp, sdk: tp}, nil
}

func otlpExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	if cfg.Protocol == ProtocolGRPC {
		var opts []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	var opts []otlptracehttp.Option
	if cfg.Endpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(cfg.Endpoint))
	}
	return otlptracehttp.New(ctx, opts...)
}

// Provider is the tracer provider to hand to the instrumented components.
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// Tracer returns the named tracer of the provider.
func (t *Tracing) Tracer(name string) trace.Tracer { return t.provider.Tracer(name) }

// ForceFlush exports every span ended so far.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// Shutdown exports what is buffered and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	err := t.sdk.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// propagator reads and writes the W3C traceparent the outbox and the stream
// carry.
var propagator = propagation.TraceContext{}

// Extract returns ctx with the remote span context traceparent names, or ctx
// itself for an empty or malformed one.
func Extract(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// TraceParent returns the W3C traceparent of ctx's span, "" without one.
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"]
}

// SpanContextOf returns the span context traceparent names (invalid for an
// empty or malformed one).
func SpanContextOf(traceparent string) trace.SpanContext {
	return trace.SpanContextFromContext(Extract(context.Background(), traceparent))
}
