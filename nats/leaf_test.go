package nats

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestEmbeddedEdgeMirrorsEmbeddedHub is the two-command deployment: an
// embedded server in domain hub accepting leaf connections, and an edge's
// embedded server in a domain of its own joined to it with the hub's user
// and password in the URL. The edge's EVENTS mirrors the hub's, message for
// message at the hub's sequence numbers, and EnsureMirror accepts the
// mirror on the next start but refuses an EVENTS that is not one.
func TestEmbeddedEdgeMirrorsEmbeddedHub(t *testing.T) {
	logger := testLogger(t)
	hubDir := t.TempDir()
	leafAddr := freeAddr(t)
	hub, err := StartEmbedded(ServerConfig{Port: RandomPort, StoreDir: hubDir, PasswordFile: filepath.Join(hubDir, "password"),
		Domain: "hub", LeafAddr: leafAddr}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Shutdown)
	_, hjs := connect(t, hub.ClientURL(), logger)
	ctx := t.Context()
	if _, err := EnsureStream(ctx, hjs, StreamConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := hjs.Publish(ctx, Subject("order", i%4, "OrderPlaced"), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}

	creds := hub.Credentials()
	edgeDir := t.TempDir()
	edge, err := StartEmbedded(ServerConfig{Port: RandomPort, StoreDir: edgeDir, PasswordFile: filepath.Join(edgeDir, "password"),
		Domain: "edge-1", Name: "jetcqrs-edge-1", Hub: &LeafRemote{URLs: []string{"nats-leaf://" + creds.User + ":" + creds.Password + "@" + leafAddr}}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(edge.Shutdown)
	deadline := time.Now().Add(30 * time.Second)
	for !edge.LeafLinked() {
		if time.Now().After(deadline) {
			t.Fatal("the edge's leaf connection is not up after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, ejs := connect(t, edge.ClientURL(), logger)
	if _, err := EnsureMirror(ctx, ejs, DefaultStreamName, "hub"); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := Mirror(ctx, ejs, DefaultStreamName)
		if err == nil && st.LastSeq == 50 && st.Lag == 0 && st.Active >= 0 && st.Active < 5*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror: %+v, %v; want 50 messages, no lag, heard from lately", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	src, _ := hjs.Stream(ctx, DefaultStreamName)
	mirror, _ := ejs.Stream(ctx, DefaultStreamName)
	for seq := uint64(1); seq <= 50; seq++ {
		want, err1 := src.GetMsg(ctx, seq)
		got, err2 := mirror.GetMsg(ctx, seq)
		if err1 != nil || err2 != nil || got.Subject != want.Subject || string(got.Data) != string(want.Data) {
			t.Fatalf("seq %d: edge %v %v, hub %v %v", seq, got, err2, want, err1)
		}
	}
	if _, err := EnsureMirror(ctx, ejs, DefaultStreamName, "hub"); err != nil {
		t.Fatalf("EnsureMirror on the existing mirror: %v", err)
	}
	if _, err := ejs.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureMirror(ctx, ejs, "OTHER", "hub"); err == nil || !strings.Contains(err.Error(), "not a mirror") {
		t.Fatalf("EnsureMirror on a plain stream: %v, want a refusal", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := Mirror(cctx, ejs, "OTHER"); err == nil {
		t.Fatal("Mirror of a plain stream: no error")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
