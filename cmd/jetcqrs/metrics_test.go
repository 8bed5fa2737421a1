package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
)

// TestMetricsOnTheirOwnAddressPassPromtool runs the whole system with
// METRICS_ADDR set: /metrics is served there and no longer on the API's
// address, and what it serves passes `promtool check metrics` (Prometheus
// naming: the jetcqrs_ prefix, units, _total on counters, help text).
func TestMetricsOnTheirOwnAddressPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed; `bash scripts/services.sh tests` installs it (Debian's prometheus package)")
	}
	cfg := &Config{}
	cmd := newRootCmd()
	cfg.bind(cmd.Flags())
	_ = cmd.Flags().Parse(nil)
	cfg.DatabaseURL = testenv.PostgresURL(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NATSPort = -1
	cfg.RedisURL, cfg.RedisPrefix = testenv.RedisURL(t)
	chAddr, chDB := testenv.ClickHouseAddr(t)
	cfg.ClickHouseURL = "clickhouse://" + chAddr + "/" + chDB
	cfg.SlotName = "jetcqrs_test_metrics"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := NewMain(ctx, cfg, All, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	get := func(url string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if m.MetricsAddr() == m.Addr() {
		t.Fatalf("metrics share the API's address %s", m.Addr())
	}
	// A request through the API gives the HTTP histogram a series.
	if code, _ := get("http://" + m.Addr() + "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d", code)
	}
	if code, _ := get("http://" + m.Addr() + "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the API's address = %d, want 404", code)
	}
	code, metrics := get("http://" + m.MetricsAddr() + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics on METRICS_ADDR = %d", code)
	}
	for _, name := range []string{"jetcqrs_relay_leader", "jetcqrs_relay_commit_to_ack_seconds", "jetcqrs_relay_events_published_total",
		"jetcqrs_http_request_duration_seconds"} {
		if !bytes.Contains(metrics, []byte("# HELP "+name+" ")) {
			t.Errorf("/metrics has no %s", name)
		}
	}
	for _, line := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(line, "relay_") {
			t.Errorf("metric without the jetcqrs_ prefix: %s", line)
		}
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(metrics)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if code, _ := get("http://" + m.MetricsAddr() + "/readyz"); code != http.StatusNotFound {
		t.Errorf("/readyz on METRICS_ADDR = %d, want 404: that listener serves /metrics and profiles only", code)
	}
	if code, body := get("http://" + m.MetricsAddr() + "/debug/pprof/heap?debug=1"); code != http.StatusOK || !bytes.Contains(body, []byte("heap profile")) {
		t.Errorf("/debug/pprof/heap on METRICS_ADDR = %d; want the heap profile", code)
	}
	if code, _ := get("http://" + m.Addr() + "/debug/pprof/heap"); code == http.StatusOK {
		t.Errorf("/debug/pprof/heap on HTTP_ADDR = %d; want the profiles on METRICS_ADDR only", code)
	}
	cancel()
	awaitReturns(t, done, 1)
}

func TestMetricsAddrConfigErrors(t *testing.T) {
	for env, want := range map[string]string{"9090": "metrics-addr ($METRICS_ADDR)", "127.0.0.1:8080": "is http-addr"} {
		t.Run(env, func(t *testing.T) {
			_, err := run(t, map[string]string{"METRICS_ADDR": env}, "version")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("METRICS_ADDR=%s: err = %v, want it to name %q", env, err, want)
			}
		})
	}
}
