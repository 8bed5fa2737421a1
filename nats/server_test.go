package nats

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestServerConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     ServerConfig
		wantErr string // substring; "" means valid
	}{
		{"defaults", ServerConfig{StoreDir: "/tmp/x"}, ""},
		{"random port", ServerConfig{StoreDir: "/tmp/x", Port: RandomPort}, ""},
		{"host name", ServerConfig{StoreDir: "/tmp/x", Host: "localhost"}, ""},
		{"ipv6", ServerConfig{StoreDir: "/tmp/x", Host: "::1"}, ""},
		{"no store dir", ServerConfig{}, "StoreDir"},
		{"port too big", ServerConfig{StoreDir: "/tmp/x", Port: 70000}, "Port"},
		{"port negative", ServerConfig{StoreDir: "/tmp/x", Port: -2}, "Port"},
		{"bad host", ServerConfig{StoreDir: "/tmp/x", Host: "not a host"}, "Host"},
		{"negative max store", ServerConfig{StoreDir: "/tmp/x", MaxStore: -1}, "MaxStore"},
		{"negative ready timeout", ServerConfig{StoreDir: "/tmp/x", ReadyTimeout: -time.Second}, "ReadyTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestServerConfigDefaults(t *testing.T) {
	t.Parallel()
	c := ServerConfig{StoreDir: "/tmp/x"}.withDefaults()
	if c.Host != "127.0.0.1" || c.Port != 4223 || c.Name != "jetcqrs" || c.ReadyTimeout != 10*time.Second {
		t.Fatalf("defaults = %+v, want loopback:4223", c)
	}
}

func TestStartEmbeddedServesJetStreamAndShutsDown(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	dir := t.TempDir()
	srv := startServerAt(t, logger, RandomPort, dir)

	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatalf("ClientURL %q: %v", srv.ClientURL(), err)
	}
	if u.Scheme != "nats" || u.Hostname() != DefaultServerHost || u.Port() == "" || u.Port() == "-1" {
		t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<port>", srv.ClientURL())
	}

	_, js := connect(t, srv.ClientURL(), logger)
	if _, err := EnsureStream(t.Context(), js, StreamConfig{}); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("JetStream store not under StoreDir: %v", err)
	}

	srv.Shutdown()
	srv.Shutdown() // idempotent
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Fatalf("server still accepts connections on %s after Shutdown", u.Host)
	}
}

func TestStartEmbeddedReportsPortInUse(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	first := startServer(t, logger)
	u, _ := url.Parse(first.ClientURL())
	port, _ := strconv.Atoi(u.Port())

	start := time.Now()
	srv, err := StartEmbedded(ServerConfig{Port: port, StoreDir: t.TempDir(), ReadyTimeout: 5 * time.Second}, logger)
	if err == nil {
		srv.Shutdown()
		t.Fatal("second server on the same port started")
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), u.Port()) {
		t.Fatalf("error = %v, want it to say the port is in use", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s to fail, want it to fail without waiting for ReadyTimeout", d)
	}
}
