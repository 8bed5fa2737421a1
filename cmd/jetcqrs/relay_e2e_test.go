package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// TestTenThousandCommandsReachTheStreamExactlyOnceInOrder drives 10,000
// commands through the HTTP API of the whole running system while other
// transactions write outbox rows and roll back. Afterwards the stream holds
// every committed event exactly once, no event of a rolled-back transaction,
// each aggregate's events in version order, and each transaction's events
// contiguous and in insertion order.
func TestTenThousandCommandsReachTheStreamExactlyOnceInOrder(t *testing.T) {
	const commands = 10_000
	const skus = 40
	s := startSystem(t, testConfig(t), Components{CommandAPI: true, Relay: true})
	admin := s.token("ops", domain.RoleAdmin)
	for i := 0; i < skus; i++ {
		sku := fmt.Sprintf("SKU-%02d", i)
		if resp, raw := s.do(http.MethodPost, "/v1/products", admin, map[string]any{"sku": sku, "name": "Item " + sku,
			"category": "c" + strconv.Itoa(i%4), "price_cents": 100 + i}, nil, nil); resp.StatusCode != 201 {
			t.Fatalf("create %s: %d %s", sku, resp.StatusCode, raw)
		}
		if resp, raw := s.do(http.MethodPost, "/v1/inventory/"+sku+"/adjustments", admin,
			map[string]any{"delta": 100_000, "reason": "initial count"}, nil, nil); resp.StatusCode != 200 {
			t.Fatalf("stock %s: %d %s", sku, resp.StatusCode, raw)
		}
	}

	// Rolled-back transactions: their event ids must never reach the stream.
	ctx, stopRollbacks := context.WithCancel(context.Background())
	var rolledBack sync.Map
	var rbWG sync.WaitGroup
	rbWG.Add(1)
	go func() {
		defer rbWG.Done()
		for i := 0; ctx.Err() == nil; i++ {
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				return
			}
			n := 1 + i%50
			for j := 0; j < n; j++ {
				id := uuid.New()
				rolledBack.Store(id.String(), true)
				_, _ = tx.Exec(ctx, `INSERT INTO outbox_events (id, aggregate_type, aggregate_id, aggregate_version,
					event_type, schema_version, payload, occurred_at) VALUES ($1, 'order', $2, $3, 'OrderPaid', 1, '{}', now())`,
					id, "rolled-back-"+strconv.Itoa(i), j+1)
			}
			_ = tx.Rollback(context.Background())
			time.Sleep(2 * time.Millisecond)
		}
	}()

	// 16 clients: customers place, pay and cancel orders; some orders fail
	// (quantity over stock is impossible here, so use unknown skus) and
	// write nothing.
	var sent, ok, failed atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 16; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 99))
			user := "user-" + strconv.Itoa(c)
			tok := s.token(user, domain.RoleCustomer)
			var open []string
			for sent.Add(1) <= commands {
				var resp *http.Response
				switch r := rng.IntN(10); {
				case r < 5 || len(open) == 0:
					items := []map[string]any{}
					for _, k := range rng.Perm(skus)[:1+rng.IntN(3)] {
						items = append(items, map[string]any{"sku": fmt.Sprintf("SKU-%02d", k), "quantity": 1 + rng.IntN(3)})
					}
					if r == 0 {
						items = append(items, map[string]any{"sku": "NOPE-" + strconv.Itoa(rng.IntN(9)), "quantity": 1})
					}
					var out struct {
						OrderID string `json:"order_id"`
					}
					resp, _ = s.do(http.MethodPost, "/v1/orders", tok, map[string]any{"user_id": user, "items": items,
						"payment": map[string]string{"method": "card", "token": "t"}}, nil, &out)
					if resp.StatusCode == 201 {
						open = append(open, out.OrderID)
					}
				case r < 8:
					resp, _ = s.do(http.MethodPost, "/v1/orders/"+open[0]+"/pay", tok, nil, nil, nil)
				default:
					id := open[len(open)-1]
					open = open[:len(open)-1]
					resp, _ = s.do(http.MethodPost, "/v1/orders/"+id+"/cancel", tok, nil, nil, nil)
				}
				if resp.StatusCode < 300 {
					ok.Add(1)
				} else if resp.StatusCode >= 500 {
					t.Errorf("a command answered %d", resp.StatusCode)
				} else {
					failed.Add(1)
				}
			}
		}(c)
	}
	wg.Wait()
	stopRollbacks()
	rbWG.Wait()
	t.Logf("%d commands succeeded, %d were refused", ok.Load(), failed.Load())
	if ok.Load() < commands/2 {
		t.Fatalf("only %d of %d commands succeeded", ok.Load(), commands)
	}

	var committed int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_events`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for s.streamCount() < uint64(committed) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	msgs := s.streamEvents(context.Background())

	// Exactly once, nothing rolled back.
	type row struct {
		seq     int64
		txid    uint64
		aggType string
		aggID   string
		version int64
	}
	rows := map[string]row{}
	dbRows, err := s.pool.Query(context.Background(), `SELECT id::text, seq, txid::text::bigint, aggregate_type, aggregate_id, aggregate_version FROM outbox_events`)
	if err != nil {
		t.Fatal(err)
	}
	for dbRows.Next() {
		var id string
		var r row
		if err := dbRows.Scan(&id, &r.seq, &r.txid, &r.aggType, &r.aggID, &r.version); err != nil {
			t.Fatal(err)
		}
		rows[id] = r
	}
	if err := dbRows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != committed {
		inStream := map[string]bool{}
		for _, m := range msgs {
			inStream[m.Header.Get(jnats.HeaderMsgID)] = true
		}
		missing := 0
		for id, r := range rows {
			if !inStream[id] {
				missing++
				if missing <= 10 {
					t.Errorf("missing from the stream: %s %+v", id, r)
				}
			}
		}
		t.Fatalf("stream holds %d events, outbox %d (%d missing); relay status %+v", len(msgs), committed, missing, s.main.relay.Status())
	}
	seen := map[string]bool{}
	lastVersion := map[string]int64{}
	lastSeqOfTx := map[uint64]int64{}
	lastTx := map[string]uint64{} // partition subject prefix → txid of the previous event
	closedTx := map[string]map[uint64]bool{}
	for _, m := range msgs {
		ev, err := jnats.DecodeMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("stream seq %d: %v", m.Sequence, err)
		}
		if seen[ev.ID] {
			t.Fatalf("event %s is in the stream twice", ev.ID)
		}
		seen[ev.ID] = true
		if _, rb := rolledBack.Load(ev.ID); rb {
			t.Fatalf("event %s of a rolled-back transaction is in the stream", ev.ID)
		}
		r, ok := rows[ev.ID]
		if !ok {
			t.Fatalf("event %s is in the stream but not in the outbox", ev.ID)
		}
		key := ev.AggregateType + "/" + ev.AggregateID
		if ev.AggregateVersion <= lastVersion[key] {
			t.Fatalf("%s: version %d after %d", key, ev.AggregateVersion, lastVersion[key])
		}
		lastVersion[key] = ev.AggregateVersion
		if r.seq <= lastSeqOfTx[r.txid] {
			t.Fatalf("transaction %d: outbox seq %d after %d", r.txid, r.seq, lastSeqOfTx[r.txid])
		}
		lastSeqOfTx[r.txid] = r.seq
		// Within a partition a transaction's events are contiguous: once
		// another transaction's event follows, it never reappears.
		part := m.Subject[:len(m.Subject)-len(ev.EventType)]
		if closedTx[part] == nil {
			closedTx[part] = map[uint64]bool{}
		}
		if prev, ok := lastTx[part]; ok && prev != r.txid {
			closedTx[part][prev] = true
		}
		if closedTx[part][r.txid] {
			t.Fatalf("partition %s: transaction %d's events are interleaved with another's", part, r.txid)
		}
		lastTx[part] = r.txid
	}
	if len(seen) != len(rows) {
		t.Fatalf("%d distinct events in the stream, %d in the outbox", len(seen), len(rows))
	}
}
