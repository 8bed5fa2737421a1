package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jetcqrs/jetcqrs/internal/httpx"
)

// validateMetricsAddr accepts an empty metrics-addr (metrics on http-addr)
// or a host:port other than http-addr.
func validateMetricsAddr(addr, httpAddr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: metrics-addr ($METRICS_ADDR) must be host:port, got %q", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("config: metrics-addr ($METRICS_ADDR) has a bad port %q", port)
	}
	if addr == httpAddr && port != "0" {
		return fmt.Errorf("config: metrics-addr ($METRICS_ADDR) %q is http-addr; leave it empty to serve /metrics there", addr)
	}
	return nil
}

// metricsEndpoint serves /metrics alone on METRICS_ADDR, so that the
// scraper's network need not reach the API and the API's clients need not
// see the metrics.
type metricsEndpoint struct {
	server   *http.Server
	listener net.Listener
}

// openMetrics opens METRICS_ADDR's listener for the registry's /metrics when
// it is set; otherwise the API router serves /metrics.
func (m *Main) openMetrics() error {
	if m.cfg.MetricsAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	l, err := net.Listen("tcp", m.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics-addr: %w", err)
	}
	m.metrics = &metricsEndpoint{listener: l, server: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn),
	}}
	return nil
}

// MetricsAddr is the address /metrics is served on.
func (m *Main) MetricsAddr() string {
	if m.metrics == nil {
		return m.Addr()
	}
	return m.metrics.listener.Addr().String()
}

// Run serves until ctx ends, then shuts the server down within grace.
func (e *metricsEndpoint) Run(ctx context.Context, grace time.Duration) error {
	return httpx.Serve(ctx, e.server, e.listener, grace)
}

// Close releases the listener when Run never ran.
func (e *metricsEndpoint) Close() { _ = e.listener.Close() }
