package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// lockedBuffer collects a child's output from its two pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readNodeProc is `jetcqrs query-api` without Elasticsearch, run as a child
// process of first's deployment: a read node.
type readNodeProc struct {
	t    *testing.T
	name string
	args []string
	cmd  *exec.Cmd
	out  *lockedBuffer
	api  *system // its HTTP API, through the harness's helpers
}

// startReadNode starts a read node on dir. local keeps every model in the
// node (REDIS_URL=none, CLICKHOUSE_URL=none); otherwise orders, inventory
// and sales are read from first's Redis and ClickHouse.
func startReadNode(t *testing.T, first *system, name, dir string, local bool) *readNodeProc {
	t.Helper()
	secret, err := first.cfg.Secret()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	redisURL, chURL := first.cfg.RedisURL, first.cfg.ClickHouseURL
	if local {
		redisURL, chURL = engineNone, engineNone
	}
	n := &readNodeProc{t: t, name: name, out: &lockedBuffer{}, api: &system{t: t, base: "http://" + addr},
		args: []string{"query-api", "--http-addr", addr, "--data-dir", dir,
			"--nats-url", first.main.natsServer.ClientURL(), "--jwt-secret", string(secret),
			"--redis-url", redisURL, "--redis-prefix", first.cfg.RedisPrefix, "--clickhouse-url", chURL,
			"--partitions", strconv.Itoa(first.cfg.Partitions), "--consistency-wait", "5s"}}
	n.start()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("read node %s output:\n%s", n.name, n.out.String())
		}
	})
	return n
}

func (n *readNodeProc) start() {
	n.t.Helper()
	n.cmd = exec.Command(os.Args[0], n.args...)
	n.cmd.Env = append(os.Environ(), "JETCQRS_TEST_CHILD=1")
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
}

// kill ends the process with SIGKILL: no shutdown at all.
func (n *readNodeProc) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	_ = n.cmd.Wait()
	n.cmd = nil
}

// stop ends the process with SIGTERM and waits for a clean exit.
func (n *readNodeProc) stop() {
	n.t.Helper()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- n.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			n.t.Errorf("read node %s stopped with %v", n.name, err)
		}
	case <-time.After(30 * time.Second):
		n.t.Errorf("read node %s did not stop within 30s", n.name)
		_ = n.cmd.Process.Kill()
		<-done
	}
	n.cmd = nil
}

// awaitReady waits for 200 on /readyz; every 503 before it must carry
// Retry-After. It reports whether a 503 was seen.
func (n *readNodeProc) awaitReady(timeout time.Duration) (sawNotReady bool) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(n.api.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				return sawNotReady
			case http.StatusServiceUnavailable:
				sawNotReady = true
				if resp.Header.Get("Retry-After") == "" {
					n.t.Fatalf("read node %s: /readyz 503 without Retry-After", n.name)
				}
			default:
				n.t.Fatalf("read node %s: /readyz = %d", n.name, resp.StatusCode)
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("read node %s not ready after %s: %v\n%s", n.name, timeout, err, n.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nodeMismatches compares every query endpoint of node with the write side
// of s and returns what differs.
func nodeMismatches(s *system, node *system, admin string) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	get := func(path string, into any) bool {
		resp, raw, err := node.send(http.MethodGet, path, admin, nil, nil, into)
		if err != nil || resp.StatusCode != http.StatusOK {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			bad("GET %s: %d %s %v", path, code, raw, err)
			return false
		}
		return true
	}
	orders := s.writeOrders()
	users := map[string][]*order{}
	for id, o := range orders {
		users[o.UserID] = append(users[o.UserID], o)
		var got projections.OrderView
		if !get("/v1/orders/"+id, &got) {
			continue
		}
		if got.Status != o.Status || got.Version != o.Version || got.TotalCents != o.TotalCents || got.UserID != o.UserID ||
			!got.PlacedAt.Equal(o.PlacedAt) || len(got.Items) != len(o.Items) {
			bad("order %s: %+v, write side %+v", id, got, *o)
		}
	}
	for user, list := range users {
		sort.Slice(list, func(i, j int) bool {
			if !list[i].PlacedAt.Equal(list[j].PlacedAt) {
				return list[i].PlacedAt.After(list[j].PlacedAt)
			}
			return list[i].ID > list[j].ID
		})
		var got []projections.OrderListEntry
		for cursor, pages := "", 0; pages <= len(list)/100+1; pages++ {
			var page orderListPage
			path := "/v1/users/" + user + "/orders?limit=100"
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			if !get(path, &page) {
				break
			}
			got = append(got, page.Orders...)
			if page.NextCursor == nil {
				break
			}
			cursor = *page.NextCursor
		}
		if len(got) != len(list) {
			bad("user %s: %d orders listed, write side %d", user, len(got), len(list))
			continue
		}
		for i, o := range list {
			if g := got[i]; g.OrderID != o.ID || g.Status != o.Status || g.TotalCents != o.TotalCents {
				bad("user %s list[%d]: %+v, write side %s %s", user, i, g, o.ID, o.Status)
			}
		}
	}
	inventory := s.writeInventory()
	for sku, st := range inventory {
		var got projections.InventoryView
		want := projections.InventoryView{SKU: sku, OnHand: st.OnHand, Reserved: st.Reserved, Available: st.OnHand - st.Reserved, Version: st.Version}
		if get("/v1/inventory/"+sku, &got) && got != want {
			bad("inventory %s: %+v, write side %+v", sku, got, want)
		}
	}
	products := s.writeProducts()
	categories := map[string]int64{}
	for sku, wp := range products {
		categories[wp.Category]++
		var p projections.ProductView
		if !get("/v1/products/"+sku, &p) {
			continue
		}
		st := inventory[sku]
		if p.Name != wp.Name || p.Category != wp.Category || p.PriceCents != wp.PriceCents || p.Version != wp.Version ||
			p.Available != st.OnHand-st.Reserved {
			bad("product %s: %+v, write side %+v, stock %+v", sku, p, wp, st)
		}
	}
	var all projections.SearchResult
	if get("/v1/products?limit=100", &all) && all.Total != int64(len(products)) {
		bad("search: total %d, write side %d products", all.Total, len(products))
	}
	for cat, n := range categories {
		var res projections.SearchResult
		if get("/v1/products?category="+url.QueryEscape(cat), &res) && res.Total != n {
			bad("search in %s: total %d, write side %d", cat, res.Total, n)
		}
	}
	from, to := time.Now().UTC().AddDate(0, 0, -2), time.Now().UTC().AddDate(0, 0, 2)
	for _, groupBy := range []string{"day", "sku", "category"} {
		var rep struct {
			Rows []projections.SalesRow `json:"rows"`
		}
		path := "/v1/reports/sales?group_by=" + groupBy + "&from=" + from.Format(time.DateOnly) + "&to=" + to.Format(time.DateOnly)
		if !get(path, &rep) {
			continue
		}
		want := expectedSales(orders, groupBy, from.Truncate(24*time.Hour), to.Truncate(24*time.Hour))
		if !slices.Equal(rep.Rows, want) {
			bad("sales by %s: %+v, write side %+v", groupBy, rep.Rows, want)
		}
	}
	return out
}

type orderListPage struct {
	Orders     []projections.OrderListEntry `json:"orders"`
	NextCursor *string                      `json:"next_cursor"`
}

// awaitConverged waits until node answers every query as the write side
// implies.
func awaitConverged(s *system, node *readNodeProc, admin string, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		diff := nodeMismatches(s, node.api, admin)
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if len(diff) > 10 {
				diff = append(diff[:10], fmt.Sprintf("… and %d more", len(diff)-10))
			}
			s.t.Fatalf("read node %s has not converged after %s:\n%s", node.name, timeout, strings.Join(diff, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readNodeConsumers counts the consumers read nodes hold on the stream.
func readNodeConsumers(s *system) (n int, projectors int) {
	s.t.Helper()
	stream, err := s.main.js.Stream(context.Background(), jnats.DefaultStreamName)
	if err != nil {
		s.t.Fatal(err)
	}
	lister := stream.ConsumerNames(context.Background())
	for name := range lister.Name() {
		switch {
		case strings.HasPrefix(name, "readnode_"):
			n++
		case strings.HasPrefix(name, "proj_"):
			projectors++
		}
	}
	if err := lister.Err(); err != nil {
		s.t.Fatal(err)
	}
	return n, projectors
}

// TestReadNodesServeWhatTheCommandsImply runs the write side (serve) and two
// read nodes as processes of their own, one keeping every model itself, one
// reading orders, inventory and sales from the shared Redis and ClickHouse:
// every query endpoint of each answers what the commands imply, a token a
// command returned is honoured by either, the nodes join none of the
// projectors' consumers, and once stopped they leave no consumer behind.
func TestReadNodesServeWhatTheCommandsImply(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "RN", 6, 1000)
	w := s.startWorkload(admin, skus, 3, 50)
	nodes := []*readNodeProc{
		startReadNode(t, s, "local", t.TempDir(), true),
		startReadNode(t, s, "shared", t.TempDir(), false),
	}
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)
	for _, n := range nodes {
		n.awaitReady(time.Minute)
		awaitConverged(s, n, admin, time.Minute)
	}
	if n, projectors := readNodeConsumers(s); n == 0 || projectors != len(projectionNames)*s.cfg.Partitions {
		t.Errorf("consumers while the read nodes run: %d of read nodes, %d of projectors (want %d)", n, projectors, len(projectionNames)*s.cfg.Partitions)
	}

	// Tokens: each command's token is honoured by either node at once.
	customer := s.token("rn-customer", domain.RoleCustomer)
	for round := range 3 {
		var placed struct {
			OrderID string `json:"order_id"`
		}
		resp := s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, map[string]any{"user_id": "rn-customer",
			"items": []map[string]any{{"sku": skus[round], "quantity": 1}}, "payment": map[string]string{"method": "invoice", "token": "t"}}, nil, &placed)
		orderTok := consistency(resp)
		resp = s.expect(http.StatusOK, http.MethodPatch, "/v1/products/"+skus[round], admin, map[string]any{"price_cents": 777 + round}, nil, nil)
		productTok := consistency(resp)
		resp = s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/"+skus[round]+"/adjustments", admin,
			map[string]any{"delta": 5, "reason": "recount"}, nil, nil)
		stockTok := consistency(resp)
		want := s.writeInventory()[skus[round]]
		for _, n := range nodes {
			var o projections.OrderView
			n.api.expect(http.StatusOK, http.MethodGet, "/v1/orders/"+placed.OrderID, customer, nil, orderTok, &o)
			if o.OrderID != placed.OrderID || o.Status != string(domain.StatusPlaced) {
				t.Errorf("node %s: order read with its token: %+v", n.name, o)
			}
			var list orderListPage
			n.api.expect(http.StatusOK, http.MethodGet, "/v1/users/rn-customer/orders", customer, nil, orderTok, &list)
			if len(list.Orders) == 0 || list.Orders[0].OrderID != placed.OrderID {
				t.Errorf("node %s: order list read with the order's token: %+v", n.name, list)
			}
			var p projections.ProductView
			n.api.expect(http.StatusOK, http.MethodGet, "/v1/products/"+skus[round], "", nil, productTok, &p)
			if p.PriceCents != int64(777+round) {
				t.Errorf("node %s: product read with its token: %+v", n.name, p)
			}
			var inv projections.InventoryView
			n.api.expect(http.StatusOK, http.MethodGet, "/v1/inventory/"+skus[round], "", nil, stockTok, &inv)
			if inv.Version != want.Version || inv.OnHand != want.OnHand {
				t.Errorf("node %s: stock read with its token: %+v, write side %+v", n.name, inv, want)
			}
			var res projections.SearchResult
			n.api.expect(http.StatusOK, http.MethodGet, "/v1/products?q=Item", "", nil, productTok, &res)
			n.api.expectProblem(http.StatusBadRequest, string(domain.CodeInvalidRequest), http.MethodGet, "/v1/reports/sales", admin, nil, orderTok)
		}
	}
	// A local rebuild: a new generation from the whole stream beside the
	// live one, which serves meanwhile, then promoted.
	for _, model := range []string{"orders", "catalog"} {
		var acc struct{ Generation string }
		nodes[0].api.expect(http.StatusAccepted, http.MethodPost, "/v1/admin/projections/"+model+"/rebuild", admin, nil, nil, &acc)
		if acc.Generation != "g2" {
			t.Fatalf("rebuild of %s: generation %q, want g2", model, acc.Generation)
		}
	}
	nodes[0].api.expectProblem(http.StatusNotFound, string(domain.CodeNotFound), http.MethodPost, "/v1/admin/projections/nope/rebuild", admin, nil, nil)
	nodes[0].api.expectProblem(http.StatusForbidden, string(domain.CodeForbidden), http.MethodPost, "/v1/admin/projections/orders/rebuild", customer, nil, nil)
	awaitGenerations(t, nodes[0], admin, map[string]string{"orders": "g2", "catalog": "g2", "inventory": "g1", "sales": "g1"})
	awaitConverged(s, nodes[0], admin, time.Minute)
	for _, n := range nodes {
		n.stop()
	}
	if n, _ := readNodeConsumers(s); n != 0 {
		t.Errorf("%d read-node consumers left on the server after the nodes stopped", n)
	}
}

// TestReadNodesConvergeAfterKillAndFromEmpty kills a read node (SIGKILL) at
// random moments while writes go on, restarts it from its directory, and
// starts another from an empty directory: both converge, and a third node
// answers every read throughout. The killed node's consumers are gone from
// the server within their inactivity threshold. Two local rebuilds are
// under way at one of the kills; the restarted node completes them.
func TestReadNodesConvergeAfterKillAndFromEmpty(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "RK", 6, 100_000)
	warm := s.startWorkload(admin, skus, 2, 40)
	warm.wg.Wait()
	warm.stop()
	steady := startReadNode(t, s, "steady", t.TempDir(), true)
	victimDir := t.TempDir()
	victim := startReadNode(t, s, "victim", victimDir, true)
	steady.awaitReady(time.Minute)
	victim.awaitReady(time.Minute)

	w := s.startWorkload(admin, skus, 2, 0)
	// The steady node serves throughout.
	var served, failed atomic.Int64
	var firstFailure atomic.Value
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
				"/v1/products?q=item", "/v1/users/load-0/orders"}[i%4]
			resp, raw, err := steady.api.send(http.MethodGet, path, admin, nil, nil, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("GET %s: %v %v %s", path, resp, err, raw))
			} else {
				served.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})

	var fresh *readNodeProc
	for round := range 4 {
		w.waitFor(int64(30 * (round + 1)))
		time.Sleep(time.Duration(50+round*170) * time.Millisecond)
		victim.kill()
		if round == 1 {
			fresh = startReadNode(t, s, "fresh", t.TempDir(), true)
		}
		victim.start()
		if round == 2 {
			// Killed in the middle of local rebuilds: the next start carries
			// them on (or retires what they replaced).
			victim.awaitReady(time.Minute)
			for _, model := range []string{"orders", "catalog"} {
				victim.api.expect(http.StatusAccepted, http.MethodPost, "/v1/admin/projections/"+model+"/rebuild", admin, nil, nil, nil)
			}
		}
		if round < 3 {
			// Killed again soon, maybe before it is even ready.
			time.Sleep(time.Duration(100+round*250) * time.Millisecond)
		}
	}
	w.waitFor(w.count.Load() + 30)
	w.stop()
	s.awaitLive(admin, time.Minute)
	for _, n := range []*readNodeProc{victim, fresh, steady} {
		n.awaitReady(time.Minute)
		awaitConverged(s, n, admin, time.Minute)
	}
	awaitGenerations(t, victim, admin, map[string]string{"orders": "g2", "catalog": "g2", "inventory": "g1", "sales": "g1"})
	close(probeDone)
	probes.Wait()
	if failed.Load() > 0 || served.Load() == 0 {
		t.Errorf("the steady node failed %d of %d reads meanwhile; first: %v", failed.Load(), failed.Load()+served.Load(), firstFailure.Load())
	}
	t.Logf("the steady node answered %d reads while the other was killed and restarted", served.Load())

	for _, n := range []*readNodeProc{victim, fresh, steady} {
		n.stop()
	}
	// The killed processes' consumers expire with their inactivity threshold.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := readNodeConsumers(s)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d read-node consumers still on the server 30s after the nodes went away", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// awaitGenerations waits until node's models are live at the given
// generations with no rebuild under way.
func awaitGenerations(t *testing.T, node *readNodeProc, admin string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var st []struct {
			Name       string `json:"name"`
			Generation string `json:"generation"`
			CaughtUp   bool   `json:"caught_up"`
			Rebuild    *struct{ Generation string }
		}
		resp, raw, err := node.api.send(http.MethodGet, "/v1/admin/projections", admin, nil, nil, &st)
		ok := err == nil && resp.StatusCode == http.StatusOK && len(st) == len(want)
		for _, m := range st {
			ok = ok && m.Generation == want[m.Name] && m.Rebuild == nil && m.CaughtUp
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("read node %s: generations %s (err %v), want %v", node.name, raw, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
