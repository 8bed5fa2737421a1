package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
)

// orderRef is an order and its owner, who may read, pay or cancel it.
type orderRef struct {
	id   string
	user int
}

// orderPool holds orders for the workload to act on: a bounded set drawn
// at random, the oldest dropped when full.
type orderPool struct {
	mu    sync.Mutex
	refs  []orderRef
	next  int
	limit int
}

func newOrderPool(limit int) *orderPool { return &orderPool{limit: limit} }

func (p *orderPool) add(r orderRef) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.refs) < p.limit {
		p.refs = append(p.refs, r)
		return
	}
	p.refs[p.next] = r
	p.next = (p.next + 1) % p.limit
}

// pick returns a random order; take removes it too, so that an order is
// paid or cancelled once.
func (p *orderPool) pick(rng *rand.Rand, take bool) (orderRef, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.refs) == 0 {
		return orderRef{}, false
	}
	i := rng.IntN(len(p.refs))
	r := p.refs[i]
	if take {
		last := len(p.refs) - 1
		p.refs[i] = p.refs[last]
		p.refs = p.refs[:last]
		p.next = 0
	}
	return r, true
}

func (p *orderPool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.refs)
}

// mixedClient drives a deployment's HTTP API with the mixed workload.
type mixedClient struct {
	base    string
	metrics string // where /metrics is served: base unless the deployment has METRICS_ADDR
	http    *http.Client
	admin   string
	tokens  []string // a customer's token by user index
	catalog []seedProduct
	stocked []string
	queries queryTable
	// readable holds orders seen in the order model; payable orders
	// placed and neither paid nor cancelled yet.
	readable, payable *orderPool
}

// mixedUsers is how many customers place, pay, cancel and read orders.
const mixedUsers = 100

func mixedUser(i int) string { return fmt.Sprintf("mixed-user-%03d", i) }

func newMixedClient(base string, secret []byte, catalog []seedProduct, queries queryTable, conns int) (*mixedClient, error) {
	tokens, err := auth.New(secret)
	if err != nil {
		return nil, err
	}
	c := &mixedClient{base: strings.TrimRight(base, "/"), metrics: strings.TrimRight(base, "/"), catalog: catalog, queries: queries,
		readable: newOrderPool(20000), payable: newOrderPool(20000),
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}}}
	if c.admin, err = tokens.Issue("mixed-admin", domain.RoleAdmin, 24*time.Hour); err != nil {
		return nil, err
	}
	for i := range mixedUsers {
		t, err := tokens.Issue(mixedUser(i), domain.RoleCustomer, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		c.tokens = append(c.tokens, t)
	}
	for _, p := range catalog {
		if p.InStock {
			c.stocked = append(c.stocked, p.SKU)
		}
	}
	return c, nil
}

// reply is what the workload keeps of a response.
type reply struct {
	status      int
	location    string
	consistency string
}

// send makes one request and reads the whole response.
func (c *mixedClient) send(ctx context.Context, method, path, token, consistency string, body []byte) (reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return reply{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if consistency != "" {
		req.Header.Set("X-Consistency-Token", consistency)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{}, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, location: resp.Header.Get("Location"),
		consistency: resp.Header.Get("X-Consistency-Token")}, nil
}

// written is a write the workload may follow into the read model.
type written struct {
	order orderRef
	reply reply
	at    time.Time // when the response arrived
	place bool
}

// read runs one read of kind op.
func (c *mixedClient) read(ctx context.Context, op string, rng *rand.Rand, z queryDraw) (reply, error) {
	switch op {
	case opOrder:
		if o, ok := c.readable.pick(rng, false); ok {
			return c.send(ctx, http.MethodGet, "/v1/orders/"+o.id, c.tokens[o.user], "", nil)
		}
		// No order is known to be visible yet: read a product instead.
		fallthrough
	case opProduct:
		return c.send(ctx, http.MethodGet, "/v1/products/"+c.catalog[rng.IntN(len(c.catalog))].SKU, "", "", nil)
	case opInventory:
		return c.send(ctx, http.MethodGet, "/v1/inventory/"+c.catalog[rng.IntN(len(c.catalog))].SKU, "", "", nil)
	case opSearch:
		return c.send(ctx, http.MethodGet, z(), "", "", nil)
	}
	return reply{}, fmt.Errorf("unknown read %q", op)
}

// queryDraw draws the next search's path.
type queryDraw func() string

// write runs one write of kind op. A pay or cancel with no placed order to
// act on places one instead and reports op as place.
func (c *mixedClient) write(ctx context.Context, op string, rng *rand.Rand) (string, written, error) {
	if op == opPay || op == opCancel {
		if o, ok := c.payable.pick(rng, true); ok {
			body := []byte(`{}`)
			if op == opCancel {
				body = []byte(`{"reason":"changed my mind"}`)
			}
			r, err := c.send(ctx, http.MethodPost, "/v1/orders/"+o.id+"/"+op, c.tokens[o.user], "", body)
			return op, written{order: o, reply: r, at: time.Now()}, err
		}
	}
	user := rng.IntN(mixedUsers)
	r, err := c.send(ctx, http.MethodPost, "/v1/orders", c.tokens[user], "", c.orderBody(rng, user))
	w := written{order: orderRef{id: strings.TrimPrefix(r.location, "/v1/orders/"), user: user}, reply: r, at: time.Now(), place: true}
	if err == nil && r.status == http.StatusCreated && w.order.id != "" {
		c.payable.add(w.order)
	}
	return opPlace, w, err
}

func (c *mixedClient) orderBody(rng *rand.Rand, user int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"user_id":%q,"items":[`, mixedUser(user))
	for i, sku := range pickSKUs(rng, c.stocked) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"sku":%q,"quantity":%d}`, sku, 1+rng.IntN(2))
	}
	b.WriteString(`],"payment":{"method":"card","token":"tok_mixed"}}`)
	return []byte(b.String())
}

// follow waits, with the write's consistency token, until the order model
// shows the write, and returns the time from the write's response to the
// read's. A placed order that shows becomes readable.
func (c *mixedClient) follow(ctx context.Context, w written) (time.Duration, int, error) {
	r, err := c.send(ctx, http.MethodGet, "/v1/orders/"+w.order.id, c.tokens[w.order.user], w.reply.consistency, nil)
	lag := time.Since(w.at)
	if err != nil {
		return lag, 0, err
	}
	if r.status == http.StatusOK && w.place {
		c.readable.add(w.order)
	}
	return lag, r.status, nil
}

// seed creates the catalog through the API (products that exist already
// are kept), gives nine in ten products stock, and waits until the catalog
// read model shows every one of them.
func (c *mixedClient) seed(ctx context.Context, workers int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, p := range c.catalog {
		g.Go(func() error {
			body, _ := json.Marshal(map[string]any{"sku": p.SKU, "name": p.Name, "description": p.Description,
				"category": p.Category, "price_cents": p.PriceCents})
			r, err := c.send(ctx, http.MethodPost, "/v1/products", c.admin, "", body)
			if err != nil {
				return err
			}
			if r.status != http.StatusCreated && r.status != http.StatusConflict {
				return fmt.Errorf("POST /v1/products %s: status %d", p.SKU, r.status)
			}
			last := r.consistency
			if p.InStock {
				a, err := c.send(ctx, http.MethodPost, "/v1/inventory/"+p.SKU+"/adjustments", c.admin, "",
					[]byte(`{"delta":100000000,"reason":"mixed benchmark stock"}`))
				if err != nil {
					return err
				}
				if a.status != http.StatusOK {
					return fmt.Errorf("POST /v1/inventory/%s/adjustments: status %d", p.SKU, a.status)
				}
				last = a.consistency
			}
			for attempt := 0; ; attempt++ {
				v, err := c.send(ctx, http.MethodGet, "/v1/products/"+p.SKU, "", last, nil)
				if err != nil {
					return err
				}
				if v.status == http.StatusOK {
					return nil
				}
				if attempt == 10 {
					return fmt.Errorf("GET /v1/products/%s after seeding: status %d", p.SKU, v.status)
				}
			}
		})
	}
	return g.Wait()
}

// prime places n orders and waits until each shows, so that order reads
// have orders to read and pays and cancels orders to act on.
func (c *mixedClient) prime(ctx context.Context, n, workers int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := range n {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(i), 5))
			_, w, err := c.write(ctx, opPlace, rng)
			if err != nil {
				return err
			}
			if w.reply.status != http.StatusCreated {
				return fmt.Errorf("POST /v1/orders: status %d", w.reply.status)
			}
			if w.reply.consistency == "" {
				c.readable.add(w.order)
				return nil
			}
			_, status, err := c.follow(ctx, w)
			if err == nil && status != http.StatusOK {
				err = fmt.Errorf("GET /v1/orders/%s with its token: status %d", w.order.id, status)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("prime orders: %w", err)
	}
	if c.readable.len() == 0 {
		return errors.New("prime orders: none readable")
	}
	return nil
}

// ready polls GET /readyz until it answers 200.
func ready(ctx context.Context, client *http.Client, base string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New("status " + strconv.Itoa(resp.StatusCode))
		}
		select {
		case <-exited:
			return errors.New("the server exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/readyz not ready after %s: %v", base, timeout, err)
		}
	}
}
