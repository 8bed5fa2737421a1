package nats

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestVersionAtLeast(t *testing.T) {
	t.Parallel()
	tests := []struct {
		have, want string
		ok         bool
	}{
		{"2.9.25", "2.11.0", false},
		{"2.10.29", "2.11.0", false},
		{"2.11.0", "2.11.0", true},
		{"2.12.1", "2.11.0", true},
		{"2.15.2", "2.11.0", true},
		{"3.0.0", "2.11.0", true},
		{"1.99.99", "2.11.0", false},
		{"v2.11.3", "2.11.0", true},
		{"2.11.0-RC.1", "2.11.0", true}, // pre-release ignored, as nats.go does
		{"2.11.0-dev", "2.11.1", false},
		{"2.11", "2.11.0", true},
		{"2.10.100", "2.11.0", false},
	}
	for _, tt := range tests {
		t.Run(tt.have+">="+tt.want, func(t *testing.T) {
			t.Parallel()
			ok, err := versionAtLeast(tt.have, tt.want)
			if err != nil {
				t.Fatalf("versionAtLeast(%q, %q): %v", tt.have, tt.want, err)
			}
			if ok != tt.ok {
				t.Fatalf("versionAtLeast(%q, %q) = %v, want %v", tt.have, tt.want, ok, tt.ok)
			}
		})
	}
	for _, bad := range []string{"", "x.y.z", "2..1", "2.11.0.1", "-1.0.0", "2.+1.0"} {
		if _, err := versionAtLeast(bad, "2.11.0"); err == nil {
			t.Errorf("versionAtLeast(%q) accepted an invalid version", bad)
		}
	}
}

func TestConnectAndRequireServerVersion(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv := startServer(t, logger)
	nc, _ := connect(t, srv.ClientURL(), logger)

	if err := RequireServerVersion(nc, MinServerVersion); err != nil {
		t.Fatalf("embedded server %s fails the version check: %v", nc.ConnectedServerVersion(), err)
	}
	err := RequireServerVersion(nc, "99.0.0")
	if !errors.Is(err, ErrServerTooOld) {
		t.Fatalf("RequireServerVersion(99.0.0) = %v, want ErrServerTooOld", err)
	}
	for _, want := range []string{nc.ConnectedServerVersion(), "99.0.0", "priority groups", "multi-filter", "NATS_URL", "upgrade"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	nc.Close()
	if err := RequireServerVersion(nc, MinServerVersion); err == nil {
		t.Fatal("RequireServerVersion on a closed connection returned nil")
	}
}

func TestConnectWaitsForServerToStart(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	// The password exists before the server does, as when a process
	// restarts against a broker that is itself restarting.
	pwFile := filepath.Join(dir, "password")
	password, err := loadOrCreatePassword(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := Credentials{User: EmbeddedUser, Password: password}.Options()
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan *Server, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv, err := StartEmbedded(ServerConfig{Port: port, StoreDir: dir, PasswordFile: pwFile}, logger)
		if err != nil {
			t.Errorf("StartEmbedded: %v", err)
		}
		started <- srv
	}()
	t.Cleanup(func() {
		if srv := <-started; srv != nil {
			srv.Shutdown()
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	nc, err := Connect(ctx, "nats://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), t.Name(), logger, auth...)
	if err != nil {
		t.Fatalf("Connect while the server starts: %v", err)
	}
	nc.Close()
}

func TestConnectGivesUpWhenContextEnds(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Connect(ctx, "nats://127.0.0.1:"+strconv.Itoa(port), t.Name(), testLogger(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to nothing = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Connect took %s after its context ended", d)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"nats://127.0.0.1:4223":                 "nats://127.0.0.1:4223",
		"nats://user:secret@host:4222":          "nats://user:xxxxx@host:4222",
		"nats://token@host:4222":                "nats://token@host:4222",
		"nats://a:b@h1:4222,nats://c:d@h2:4222": "nats://a:xxxxx@h1:4222,nats://c:xxxxx@h2:4222",
		"tls://user:p@ss:word@host:4222":        "tls://user:xxxxx@host:4222",
	}
	for in, want := range tests {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
