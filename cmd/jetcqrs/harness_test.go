package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// projectionNames are the read models every projector runs.
var projectionNames = []string{"orders", "inventory", "catalog", "sales"}

// problem is an RFC 9457 answer as clients see it.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// send is do without the testing.T: safe in any goroutine.
func (s *system) send(method, path, token string, body any, header map[string]string, out any) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp, raw, fmt.Errorf("%s %s: decode %s: %w", method, path, raw, err)
		}
	}
	return resp, raw, nil
}

// expect sends a request, fails the test unless it answers want, decodes a
// 2xx JSON body into out and returns the response.
func (s *system) expect(want int, method, path, token string, body any, header map[string]string, out any) *http.Response {
	s.t.Helper()
	resp, raw := s.do(method, path, token, body, header, out)
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	return resp
}

// expectProblem sends a request and fails the test unless it answers a
// problem+json with status and code.
func (s *system) expectProblem(status int, code, method, path, token string, body any, header map[string]string) (*http.Response, problem) {
	s.t.Helper()
	resp, raw := s.do(method, path, token, body, header, nil)
	var p problem
	if resp.StatusCode != status {
		s.t.Fatalf("%s %s: %d %s, want %d %s", method, path, resp.StatusCode, raw, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		s.t.Fatalf("%s %s: Content-Type %q, want application/problem+json", method, path, ct)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		s.t.Fatalf("%s %s: decode problem %s: %v", method, path, raw, err)
	}
	if p.Code != code || p.Status != status {
		s.t.Fatalf("%s %s: problem %+v, want status %d code %s", method, path, p, status, code)
	}
	return resp, p
}

// consistency is the X-Consistency-Token header to send back on a read.
func consistency(resp *http.Response) map[string]string {
	return map[string]string{"X-Consistency-Token": resp.Header.Get("X-Consistency-Token")}
}

// projectionStatus is one entry of GET /v1/admin/projections.
type projectionStatus struct {
	Name        string `json:"name"`
	Generation  string `json:"generation"`
	State       string `json:"state"`
	LastSeq     uint64 `json:"last_seq"`
	Pending     uint64 `json:"pending"`
	LagMS       int64  `json:"lag_ms"`
	DeadLetters uint64 `json:"dead_letters"`
	Rebuild     *struct {
		Generation string  `json:"generation"`
		Pending    uint64  `json:"pending"`
		Done       uint64  `json:"done"`
		Total      uint64  `json:"total"`
		ETASeconds float64 `json:"eta_seconds"`
		Owner      string  `json:"owner"`
	} `json:"rebuild"`
}

// outboxCount is how many events the write side has committed.
func (s *system) outboxCount() uint64 {
	s.t.Helper()
	var n uint64
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_events`).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// awaitCaughtUp waits until the stream holds every committed event and every
// projection of the runtime running in p (any process of the deployment) has
// applied all of them, and returns the status. It polls: no sleeping for a
// guessed time.
func (s *system) awaitCaughtUp(p *system, timeout time.Duration) []lifecycle.Status {
	s.t.Helper()
	want := s.outboxCount()
	deadline := time.Now().Add(timeout)
	for s.streamCount() < want {
		if time.Now().After(deadline) {
			s.t.Fatalf("the stream holds %d events after %s, the outbox %d", s.streamCount(), timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var last []lifecycle.Status
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, lastErr = p.main.models.Status(ctx)
		cancel()
		// A projector without the query API beside it runs every projection
		// but the embedded catalog, which stays with the process serving it.
		if lastErr == nil && len(last) >= len(projectionNames)-1 && !slices.ContainsFunc(last, func(st lifecycle.Status) bool {
			return st.State != "live" || st.Pending != 0
		}) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("projections not caught up with %d events after %s: %+v (err %v)", want, timeout, last, lastErr)
	return nil
}

// consumerName is the durable consumer of a projection's partition in the
// first generation, as the runtime names it.
func consumerName(projection string, partition int) string {
	return projections.ConsumerName(projection, lifecycle.GenerationName(1), partition)
}

// pauseProjection pauses (until the zero time: resumes) every consumer of a
// projection, so that its read model stops progressing while the rest of the
// system runs on.
func (s *system) pauseProjection(name string, until time.Time) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for part := 0; part < s.cfg.Partitions; part++ {
		c := consumerName(name, part)
		var err error
		if until.IsZero() {
			_, err = s.main.js.ResumeConsumer(ctx, jnats.DefaultStreamName, c)
		} else {
			_, err = s.main.js.PauseConsumer(ctx, jnats.DefaultStreamName, c, until)
		}
		if err != nil {
			s.t.Fatalf("pause %s until %v: %v", c, until, err)
		}
	}
}

// counter sums a counter of m's registry over the series whose projection
// label is projection.
func counter(t *testing.T, m *Main, metric, projection string) float64 {
	t.Helper()
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, series := range f.GetMetric() {
			for _, l := range series.GetLabel() {
				if l.GetName() == "projection" && l.GetValue() == projection {
					sum += series.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// startPeer runs another process of the same deployment: same database,
// Redis prefix, ClickHouse database and NATS server as first, its own data
// directory (so its own embedded catalog index) and HTTP port.
func startPeer(t *testing.T, first *system, comp Components) *system {
	t.Helper()
	secret, err := first.cfg.Secret()
	if err != nil {
		t.Fatal(err)
	}
	cfg := *first.cfg
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.JWTSecret = string(secret)
	cfg.NATSURL = first.natsURL()
	return startSystem(t, &cfg, comp)
}

// natsURL is where the other processes of s's deployment reach NATS: the
// cluster s was given, or s's embedded server.
func (s *system) natsURL() string {
	if s.cfg.NATSURL != "" {
		return s.cfg.NATSURL
	}
	return s.main.natsServer.ClientURL()
}

// order is one order of the write side, from PostgreSQL.
type order struct {
	ID, UserID, Status string
	TotalCents         int64
	Version            int64
	PlacedAt           time.Time
	UpdatedAt          time.Time
	Items              []orderLine
}

type orderLine struct {
	SKU, Category        string
	Quantity, PriceCents int64
}

// writeOrders reads every order with its lines from PostgreSQL.
func (s *system) writeOrders() map[string]*order {
	s.t.Helper()
	ctx := context.Background()
	out := map[string]*order{}
	rows, err := s.pool.Query(ctx, `SELECT id::text, user_id, status, total_cents, version, placed_at, updated_at FROM orders`)
	if err != nil {
		s.t.Fatal(err)
	}
	for rows.Next() {
		o := &order{}
		if err := rows.Scan(&o.ID, &o.UserID, &o.Status, &o.TotalCents, &o.Version, &o.PlacedAt, &o.UpdatedAt); err != nil {
			s.t.Fatal(err)
		}
		o.PlacedAt, o.UpdatedAt = o.PlacedAt.UTC(), o.UpdatedAt.UTC()
		out[o.ID] = o
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	rows, err = s.pool.Query(ctx, `SELECT order_id::text, sku, category, quantity, price_cents FROM order_items ORDER BY order_id, line_no`)
	if err != nil {
		s.t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var l orderLine
		if err := rows.Scan(&id, &l.SKU, &l.Category, &l.Quantity, &l.PriceCents); err != nil {
			s.t.Fatal(err)
		}
		out[id].Items = append(out[id].Items, l)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// stock is one SKU's inventory on the write side.
type stock struct{ OnHand, Reserved, Version int64 }

func (s *system) writeInventory() map[string]stock {
	s.t.Helper()
	rows, err := s.pool.Query(context.Background(), `SELECT sku, on_hand, reserved, version FROM inventory`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]stock{}
	for rows.Next() {
		var sku string
		var st stock
		if err := rows.Scan(&sku, &st.OnHand, &st.Reserved, &st.Version); err != nil {
			s.t.Fatal(err)
		}
		out[sku] = st
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// product is one product on the write side.
type product struct {
	Name, Description, Category string
	PriceCents, Version         int64
}

func (s *system) writeProducts() map[string]product {
	s.t.Helper()
	rows, err := s.pool.Query(context.Background(), `SELECT sku, name, description, category, price_cents, version FROM products`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]product{}
	for rows.Next() {
		var sku string
		var p product
		if err := rows.Scan(&sku, &p.Name, &p.Description, &p.Category, &p.PriceCents, &p.Version); err != nil {
			s.t.Fatal(err)
		}
		out[sku] = p
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// expectedSales is the sales report the write side implies for orders
// placed in [from, to): cancelled orders count nowhere.
func expectedSales(orders map[string]*order, groupBy string, from, to time.Time) []projections.SalesRow {
	type acc struct {
		orders              map[string]bool
		units, revenueCents int64
	}
	groups := map[string]*acc{}
	for _, o := range orders {
		if o.Status == string(domain.StatusCancelled) || o.PlacedAt.Before(from) || !o.PlacedAt.Before(to) {
			continue
		}
		for _, l := range o.Items {
			key := map[string]string{"day": o.PlacedAt.Format(time.DateOnly), "sku": l.SKU, "category": l.Category}[groupBy]
			a := groups[key]
			if a == nil {
				a = &acc{orders: map[string]bool{}}
				groups[key] = a
			}
			a.orders[o.ID] = true
			a.units += l.Quantity
			a.revenueCents += l.Quantity * l.PriceCents
		}
	}
	rows := []projections.SalesRow{}
	for k, a := range groups {
		rows = append(rows, projections.SalesRow{Key: k, Orders: int64(len(a.orders)), Units: a.units, RevenueCents: a.revenueCents})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Key < rows[j].Key })
	return rows
}

// checkReadModelsMatchWriteSide compares the order, inventory and sales read
// models that m reads with the state in PostgreSQL, entry by entry; with
// catalog set it compares the catalog too (only meaningful when one process
// applied every catalog event into m's embedded index).
func (s *system) checkReadModelsMatchWriteSide(m *Main, catalog bool) {
	s.t.Helper()
	t := s.t
	ctx := context.Background()
	orders := s.writeOrders()
	users := map[string][]*order{}
	for id, o := range orders {
		users[o.UserID] = append(users[o.UserID], o)
		got, err := m.live.Orders().Order(ctx, id)
		if err != nil {
			t.Errorf("order %s: %v", id, err)
			continue
		}
		if got.Status != o.Status || got.Version != o.Version || got.TotalCents != o.TotalCents || got.UserID != o.UserID ||
			!got.PlacedAt.Equal(o.PlacedAt) || !got.UpdatedAt.Equal(o.UpdatedAt) || len(got.Items) != len(o.Items) {
			t.Errorf("order %s: read model %+v, write side %+v", id, got, *o)
			continue
		}
		for i, l := range o.Items {
			if g := got.Items[i]; g.SKU != l.SKU || g.Quantity != l.Quantity || g.PriceCents != l.PriceCents {
				t.Errorf("order %s line %d: read model %+v, write side %+v", id, i, g, l)
			}
		}
	}
	for user, list := range users {
		sort.Slice(list, func(i, j int) bool {
			if !list[i].PlacedAt.Equal(list[j].PlacedAt) {
				return list[i].PlacedAt.After(list[j].PlacedAt)
			}
			return list[i].ID > list[j].ID
		})
		// Page through the whole list: a busy workload gives a user more
		// orders than one page holds.
		var got []projections.OrderListEntry
		var err error
		for cursor, pages := "", 0; ; pages++ {
			var page []projections.OrderListEntry
			page, cursor, err = m.live.Orders().UserOrders(ctx, user, 1000, cursor)
			got = append(got, page...)
			if err != nil || cursor == "" || pages > len(list)/1000+1 {
				break
			}
		}
		if err != nil || len(got) != len(list) {
			t.Errorf("user %s: %d orders listed (err %v), write side %d", user, len(got), err, len(list))
			continue
		}
		for i, o := range list {
			if g := got[i]; g.OrderID != o.ID || g.Status != o.Status || g.TotalCents != o.TotalCents || !g.PlacedAt.Equal(o.PlacedAt) {
				t.Errorf("user %s list[%d]: %+v, write side %s %s %d %s", user, i, g, o.ID, o.Status, o.TotalCents, o.PlacedAt)
			}
		}
	}
	for sku, st := range s.writeInventory() {
		got, err := m.live.Inventory().Inventory(ctx, sku)
		want := projections.InventoryView{SKU: sku, OnHand: st.OnHand, Reserved: st.Reserved, Available: st.OnHand - st.Reserved, Version: st.Version}
		if err != nil || got != want {
			t.Errorf("inventory %s: read model %+v (err %v), write side %+v", sku, got, err, want)
		}
		if !catalog {
			continue
		}
		// The catalog keeps whether the SKU is in stock; the query API
		// takes the units from the inventory model checked above.
		p, err := m.live.Catalog().Product(ctx, sku)
		if err != nil || p.InStock != (want.Available > 0) {
			t.Errorf("catalog %s: in stock %t (err %v), write side %d available", sku, p.InStock, err, want.Available)
		}
	}
	if catalog {
		for sku, wp := range s.writeProducts() {
			p, err := m.live.Catalog().Product(ctx, sku)
			if err != nil || p.Name != wp.Name || p.Description != wp.Description || p.Category != wp.Category ||
				p.PriceCents != wp.PriceCents || p.Version != wp.Version {
				t.Errorf("catalog %s: %+v (err %v), write side %+v", sku, p, err, wp)
			}
		}
	}
	from, to := time.Now().UTC().AddDate(0, 0, -2), time.Now().UTC().AddDate(0, 0, 2)
	for _, groupBy := range []string{"day", "sku", "category"} {
		got, err := m.live.Sales().Sales(ctx, projections.SalesQuery{From: from, To: to, GroupBy: groupBy})
		want := expectedSales(orders, groupBy, from, to)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("sales by %s: read model %+v (err %v), write side %+v", groupBy, got, err, want)
		}
	}
}

// redisDump is every key under the test's prefix with its DUMP.
func redisDump(t *testing.T, redisURL, prefix string) map[string]string {
	t.Helper()
	return redisScan(t, redisURL, prefix, true)
}

// redisKeys lists the keys under prefix, as SCAN finds them while others may
// be deleting some.
func redisKeys(t *testing.T, redisURL, prefix string) []string {
	t.Helper()
	return slices.Collect(maps.Keys(redisScan(t, redisURL, prefix, false)))
}

func redisScan(t *testing.T, redisURL, prefix string, dump bool) map[string]string {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	defer client.Close()
	ctx := context.Background()
	out := map[string]string{}
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if !dump {
			out[iter.Val()] = ""
			continue
		}
		v, err := client.Dump(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatalf("DUMP %s: %v", iter.Val(), err)
		}
		out[iter.Val()] = v
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// redisServer is a private redis-server for one test, persisting every write
// to its append-only file (the production shape), so that it can be killed
// and started again with its data.
type redisServer struct {
	t    *testing.T
	port int
	dir  string
	// volatile keeps nothing on disk (as this machine's Redis runs): a
	// restart loses every key.
	volatile bool
	mu       sync.Mutex
	cmd      *exec.Cmd
}

func startRedisServer(t *testing.T, volatile bool) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: `bash scripts/services.sh` installs it")
	}
	r := &redisServer{t: t, port: freePort(t), dir: t.TempDir(), volatile: volatile}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0" }

// start runs redis-server and waits until it answers PING.
func (r *redisServer) start() {
	r.t.Helper()
	aof := "yes"
	if r.volatile {
		aof = "no"
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", aof, "--appendfsync", "always", "--dir", r.dir, "--daemonize", "no")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	defer client.Close()
	deadline := time.Now().Add(10 * time.Second)
	for client.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on port %d does not answer: %s", r.port, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends redis-server with SIGKILL: no shutdown, no final save.
func (r *redisServer) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// awaitLive waits, through GET /v1/admin/projections, until the stream holds
// every committed event and every projection (or those named in only) is
// live with nothing pending, and returns the last answer. It polls: no
// sleeping for a guessed time.
func (s *system) awaitLive(admin string, timeout time.Duration, only ...string) []projectionStatus {
	s.t.Helper()
	want := s.outboxCount()
	deadline := time.Now().Add(timeout)
	for s.streamCount() < want {
		if time.Now().After(deadline) {
			s.t.Fatalf("the stream holds %d events after %s, the outbox %d", s.streamCount(), timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var last []projectionStatus
	var raw []byte
	for {
		last = nil
		var resp *http.Response
		resp, raw = s.do(http.MethodGet, "/v1/admin/projections", admin, nil, nil, &last)
		if resp.StatusCode == http.StatusOK && len(last) == len(projectionNames) && !slices.ContainsFunc(last, func(st projectionStatus) bool {
			return (len(only) == 0 || slices.Contains(only, st.Name)) && (st.State != "live" || st.Pending != 0)
		}) {
			return last
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("projections not live with %d events after %s: %d %s", want, timeout, resp.StatusCode, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seedCatalog creates n products named prefix-NN in four categories, with
// prices across the facet ranges, and counts units of each into stock.
func (s *system) seedCatalog(admin, prefix string, n int, units int64) []string {
	s.t.Helper()
	skus := make([]string, n)
	for i := range skus {
		skus[i] = fmt.Sprintf("%s-%02d", prefix, i)
		s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": skus[i],
			"name": "Item " + strconv.Itoa(i), "description": "seeded item number " + strconv.Itoa(i),
			"category": "cat" + strconv.Itoa(i%4), "price_cents": 500 + 2500*i}, nil, nil)
		s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/"+skus[i]+"/adjustments", admin,
			map[string]any{"delta": units, "reason": "initial count"}, nil, nil)
	}
	return skus
}

// workload is a shop's traffic through the HTTP API: customers place, pay
// and cancel orders, an admin ships and delivers them, counts stock and
// changes prices. Every command succeeds or is refused for a business
// reason; anything else is recorded as an error.
type workload struct {
	s     *system
	done  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	errs  []error
	count atomic.Int64
}

// startWorkload runs clients goroutines, each sending at most limit commands
// (0: until stop).
func (s *system) startWorkload(admin string, skus []string, clients, limit int) *workload {
	w := &workload{s: s, done: make(chan struct{})}
	for c := 0; c < clients; c++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.client(admin, skus, c, limit)
		}()
	}
	return w
}

func (w *workload) client(admin string, skus []string, c, limit int) {
	rng := rand.New(rand.NewPCG(uint64(c), 7))
	user := "load-" + strconv.Itoa(c)
	customer := w.s.token(user, domain.RoleCustomer)
	var placed, paid []string
	take := func(list *[]string) string {
		i := rng.IntN(len(*list))
		id := (*list)[i]
		*list = append((*list)[:i], (*list)[i+1:]...)
		return id
	}
	for i := 0; limit == 0 || i < limit; i++ {
		select {
		case <-w.done:
			return
		default:
		}
		var method, path, tok string
		var body any
		var order struct {
			OrderID string `json:"order_id"`
		}
		var out any
		r := rng.IntN(100)
		switch {
		case r < 40 || len(placed)+len(paid) == 0:
			items := []map[string]any{}
			for _, k := range rng.Perm(len(skus))[:1+rng.IntN(min(3, len(skus)))] {
				items = append(items, map[string]any{"sku": skus[k], "quantity": 1 + rng.IntN(3)})
			}
			method, path, tok, out = http.MethodPost, "/v1/orders", customer, &order
			body = map[string]any{"user_id": user, "items": items, "payment": map[string]string{"method": "invoice", "token": "t"}}
		case r < 60 && len(placed) > 0:
			id := take(&placed)
			paid = append(paid, id)
			method, path, tok = http.MethodPost, "/v1/orders/"+id+"/pay", customer
		case r < 70 && len(paid) > 0:
			id := take(&paid)
			method, path, tok = http.MethodPost, "/v1/orders/"+id+"/ship", admin
			if rng.IntN(2) == 0 {
				if err := w.send(method, path, tok, map[string]any{}, nil); err != nil {
					return
				}
				path = "/v1/orders/" + id + "/deliver"
			}
		case r < 85:
			var id string
			if len(placed) > 0 && (len(paid) == 0 || rng.IntN(2) == 0) {
				id = take(&placed)
			} else {
				id = take(&paid)
			}
			method, path, tok = http.MethodPost, "/v1/orders/"+id+"/cancel", customer
			body = map[string]any{"reason": "changed my mind"}
		case r < 95:
			method, path, tok = http.MethodPost, "/v1/inventory/"+skus[rng.IntN(len(skus))]+"/adjustments", admin
			body = map[string]any{"delta": 1 + rng.IntN(20), "reason": "recount"}
		default:
			method, path, tok = http.MethodPatch, "/v1/products/"+skus[rng.IntN(len(skus))], admin
			body = map[string]any{"price_cents": 100 + rng.IntN(60000)}
		}
		if body == nil {
			body = map[string]any{}
		}
		if err := w.send(method, path, tok, body, out); err != nil {
			return
		}
		if order.OrderID != "" {
			placed = append(placed, order.OrderID)
		}
	}
}

// send runs one command; it returns an error (recorded) only for an answer
// no business rule explains.
func (w *workload) send(method, path, tok string, body, out any) error {
	resp, raw, err := w.s.send(method, path, tok, body, nil, out)
	if err == nil && resp.StatusCode >= 300 && resp.StatusCode != http.StatusConflict {
		err = fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if err != nil {
		w.mu.Lock()
		w.errs = append(w.errs, err)
		w.mu.Unlock()
		return err
	}
	if resp.StatusCode < 300 {
		w.count.Add(1)
	}
	return nil
}

// waitFor waits until at least n commands succeeded or every client ended.
func (w *workload) waitFor(n int64) {
	w.s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for w.count.Load() < n {
		if time.Now().After(deadline) {
			w.s.t.Fatalf("only %d of %d commands after 2 minutes", w.count.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop ends the traffic, waits for the clients and fails the test on any
// unexplained answer. It returns how many commands succeeded.
func (w *workload) stop() int64 {
	w.s.t.Helper()
	close(w.done)
	w.wg.Wait()
	for _, err := range w.errs {
		w.s.t.Error(err)
	}
	if len(w.errs) > 0 {
		w.s.t.FailNow()
	}
	return w.count.Load()
}
