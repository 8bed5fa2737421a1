package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/jetcqrs/jetcqrs/readnode"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/natstest"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// startEdgeNode starts an edge node on dir as a child process: a read node
// keeping every model itself, whose embedded NATS server joins the hub
// through leaf as a leaf node in domain edge-test and mirrors EVENTS, and
// which forwards commands to hubAPI.
func startEdgeNode(t *testing.T, hub *system, dir, leaf, hubAPI string) *readNodeProc {
	t.Helper()
	secret, err := hub.cfg.Secret()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	n := &readNodeProc{t: t, name: "edge", out: &lockedBuffer{}, api: &system{t: t, base: "http://" + addr},
		args: []string{"query-api", "--http-addr", addr, "--data-dir", dir, "--nats-port", strconv.Itoa(freePort(t)),
			"--nats-hub-url", "nats-leaf://" + leaf, "--nats-domain", "edge-test", "--nats-hub-domain", natstest.HubDomain,
			"--hub-api-url", hubAPI, "--jwt-secret", string(secret), "--redis-url", engineNone, "--clickhouse-url", engineNone,
			"--consistency-wait", "2s"}}
	n.start()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("edge node output:\n%s", n.out.String())
		}
	})
	return n
}

// edgeReadyz is the edge's /readyz.
type edgeReadyz struct {
	Ready  bool `json:"ready"`
	Detail struct {
		Edge struct {
			HubLinked     bool   `json:"hub_linked"`
			StaleSeconds  int64  `json:"stale_seconds"`
			MirrorLastSeq uint64 `json:"mirror_last_seq"`
		} `json:"edge"`
	} `json:"detail"`
}

func (n *readNodeProc) readyz() (int, edgeReadyz) {
	n.t.Helper()
	var body edgeReadyz
	resp, err := http.Get(n.api.base + "/readyz")
	if err != nil {
		n.t.Fatalf("edge /readyz: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		n.t.Fatalf("edge /readyz: %v", err)
	}
	return resp.StatusCode, body
}

// TestEdgeNodeAcrossALinkCut runs the write side on a hub (a three-node
// NATS cluster in domain hub) and an edge node, a process of its own whose
// embedded server is a leaf node of the hub, its leaf connection and its
// way to the hub's command API through links the test cuts. Orders placed
// at the hub appear at the edge, and a command sent to the edge is
// forwarded and its token honoured there. Then both links are cut for a
// while under writes: the edge answers every read without a token, its
// staleness header and /readyz detail grow, commands sent to it answer 503
// hub_unreachable, and a hub token it has not reached times out as on the
// hub. Once the links are back the edge converges to the hub's state, and
// its mirror holds every event of the hub's stream at the hub's sequence,
// once.
func TestEdgeNodeAcrossALinkCut(t *testing.T) {
	c := natstest.StartHub(t)
	cfg := testConfig(t)
	cfg.NATSURL = c.ClientURL()
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "EDG", 6, 100_000)
	leaf := c.LeafLink(t)
	api := natstest.StartLink(t, strings.TrimPrefix(s.base, "http://"))
	dir := t.TempDir()
	edge := startEdgeNode(t, s, dir, leaf.Addr(), "http://"+api.Addr())
	edge.awaitReady(time.Minute)

	w := s.startWorkload(admin, skus, 2, 30)
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)
	awaitConverged(s, edge, admin, time.Minute)

	// A command sent to the edge is the hub's, with the hub's token.
	customer := s.token("edge-customer", domain.RoleCustomer)
	placeBody := map[string]any{"user_id": "edge-customer", "items": []map[string]any{{"sku": skus[0], "quantity": 1}},
		"payment": map[string]string{"method": "invoice", "token": "t"}}
	var placed struct {
		OrderID string `json:"order_id"`
	}
	resp := edge.api.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, placeBody,
		map[string]string{"Idempotency-Key": "edge-order-1"}, &placed)
	var o projections.OrderView
	edge.api.expect(http.StatusOK, http.MethodGet, "/v1/orders/"+placed.OrderID, customer, nil, consistency(resp), &o)
	if o.OrderID != placed.OrderID || s.writeOrders()[placed.OrderID] == nil {
		t.Fatalf("order placed through the edge: edge reads %+v; the hub has it: %v", o, s.writeOrders()[placed.OrderID] != nil)
	}

	// Reads without a token, all along.
	firstOrder := placed.OrderID
	var served, failed atomic.Int64
	var firstFailure atomic.Value
	var maxStale atomic.Int64
	probeDone := make(chan struct{})
	var probes sync.WaitGroup
	probes.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-probeDone:
				return
			default:
			}
			path := []string{"/v1/products/" + skus[i%len(skus)], "/v1/inventory/" + skus[i%len(skus)],
				"/v1/products?q=item", "/v1/users/load-0/orders", "/v1/orders/" + firstOrder}[i%5]
			resp, raw, err := edge.api.send(http.MethodGet, path, admin, nil, nil, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("GET %s: %v %v %s", path, resp, err, raw))
			} else {
				served.Add(1)
				stale, err := strconv.ParseInt(resp.Header.Get(readnode.StaleHeader), 10, 64)
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("GET %s: %s %q", path, readnode.StaleHeader, resp.Header.Get(readnode.StaleHeader)))
				}
				if stale > maxStale.Load() {
					maxStale.Store(stale)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})

	w = s.startWorkload(admin, skus, 2, 0)
	w.waitFor(20)
	leaf.Cut()
	api.Cut()
	deadline := time.Now().Add(30 * time.Second)
	for c.NumLeafNodes() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the hub still holds the edge's leaf connection 30s after the cut")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cutAt := w.count.Load()
	w.waitFor(cutAt + 60)
	time.Sleep(3 * time.Second)
	status, rz := edge.readyz()
	if status != http.StatusOK || rz.Detail.Edge.HubLinked || rz.Detail.Edge.StaleSeconds < 2 {
		t.Errorf("edge /readyz with the link cut: %d %+v; want 200, unlinked, stale ≥ 2s", status, rz)
	}
	edge.api.expectProblem(http.StatusServiceUnavailable, "hub_unreachable", http.MethodPost, "/v1/orders", customer, placeBody,
		map[string]string{"Idempotency-Key": "edge-order-2"})
	// A token from the hub the edge has not reached waits out its bound.
	resp = s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, placeBody, nil, &placed)
	edge.api.expectProblem(http.StatusServiceUnavailable, "consistency_timeout", http.MethodGet, "/v1/orders/"+placed.OrderID,
		customer, nil, consistency(resp))
	duringCut := maxStale.Load()
	w.waitFor(w.count.Load() + 30)

	leaf.Restore()
	api.Restore()
	w.waitFor(w.count.Load() + 30)
	commands := w.stop()
	s.awaitLive(admin, time.Minute)
	awaitConverged(s, edge, admin, 2*time.Minute)
	close(probeDone)
	probes.Wait()
	if failed.Load() > 0 || served.Load() == 0 {
		t.Errorf("the edge failed %d of %d reads without a token; first: %v", failed.Load(), failed.Load()+served.Load(), firstFailure.Load())
	}
	if duringCut < 3 {
		t.Errorf("%s reached %d during the cut, want ≥ 3", readnode.StaleHeader, duringCut)
	}
	// The retry of the refused command, with its key, goes through now.
	edge.api.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, placeBody,
		map[string]string{"Idempotency-Key": "edge-order-2"}, nil)
	s.awaitLive(admin, time.Minute)
	awaitConverged(s, edge, admin, time.Minute)
	if _, rz := edge.readyz(); !rz.Detail.Edge.HubLinked || rz.Detail.Edge.StaleSeconds > 2 {
		t.Errorf("edge /readyz after the restore: %+v; want linked, stale ≤ 2s", rz)
	}
	checkMirror(t, s, edge, dir)
	t.Logf("%d commands, %d of them after the cut; %d reads at the edge; %s reached %d",
		commands, commands-cutAt, served.Load(), readnode.StaleHeader, duringCut)
}

// checkMirror compares the edge's mirror with the hub's stream, message by
// message: the same sequence numbers, ids and subjects, nothing missing,
// nothing twice.
func checkMirror(t *testing.T, hub *system, edge *readNodeProc, dir string) {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(dir, "nats-password"))
	if err != nil {
		t.Fatal(err)
	}
	port := ""
	for i, a := range edge.args {
		if a == "--nats-port" {
			port = edge.args[i+1]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := jnats.Connect(ctx, "nats://"+jnats.EmbeddedUser+":"+strings.TrimSpace(string(pw))+"@127.0.0.1:"+port, "edge-check", hub.main.logger)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ejs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := ejs.Stream(ctx, jnats.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	src, err := hub.main.js.Stream(ctx, jnats.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	hi, mi := src.CachedInfo().State, mirror.CachedInfo().State
	if hi.LastSeq != mi.LastSeq || hi.Msgs != mi.Msgs || mi.FirstSeq != hi.FirstSeq {
		t.Fatalf("the edge's mirror holds %+v, the hub's stream %+v", mi, hi)
	}
	seen := map[string]bool{}
	for seq := hi.FirstSeq; seq <= hi.LastSeq; seq++ {
		want, err := src.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("hub seq %d: %v", seq, err)
		}
		got, err := mirror.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("edge seq %d: %v", seq, err)
		}
		id := got.Header.Get("Nats-Msg-Id")
		if got.Subject != want.Subject || id != want.Header.Get("Nats-Msg-Id") || seen[id] {
			t.Fatalf("seq %d: edge %s %s (seen before: %v), hub %s %s", seq, got.Subject, id, seen[id], want.Subject, want.Header.Get("Nats-Msg-Id"))
		}
		seen[id] = true
	}
}
