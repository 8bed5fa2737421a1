package main

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

// TestSeveralProjectorProcessesKeepEveryAggregateInOrder runs one process
// with the command API and the relay (and the embedded NATS server) and
// projector-only processes sharing its stream and read models, and hammers
// the same aggregates: 60 orders each placed, paid and (mostly) cancelled in
// quick succession, and hundreds of adjustments of the same two SKUs. The
// server pins each partition to one process; midway the process that holds
// them stops, so the partitions change hands while events flow. Afterwards
// every order, inventory and sales entry equals the write side in
// PostgreSQL: no older event overwrote a newer one. (Each process has its
// own embedded catalog index, so the catalog is not compared here.)
func TestSeveralProjectorProcessesKeepEveryAggregateInOrder(t *testing.T) {
	writer := startSystem(t, testConfig(t), Components{CommandAPI: true, Relay: true})
	admin := writer.token("ops", domain.RoleAdmin)
	var projectors [3]*system
	for i := range projectors {
		projectors[i] = startPeer(t, writer, Components{Projector: true})
	}
	skus := writer.seedCatalog(admin, "ORD", 4, 100_000)

	var wg sync.WaitGroup
	var progress atomic.Int64
	errs := make(chan error, 20)
	for c := 0; c < 12; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := "racer-" + strconv.Itoa(c)
			tok := writer.token(user, domain.RoleCustomer)
			for i := 0; i < 5; i++ {
				var placed struct {
					OrderID string `json:"order_id"`
				}
				resp, raw, err := writer.send(http.MethodPost, "/v1/orders", tok, map[string]any{"user_id": user,
					"items":   []map[string]any{{"sku": skus[(c+i)%len(skus)], "quantity": 1 + i}, {"sku": skus[(c+i+1)%len(skus)], "quantity": 1}},
					"payment": map[string]string{"method": "card", "token": "t"}}, nil, &placed)
				if err != nil || resp.StatusCode != http.StatusCreated {
					errs <- fmt.Errorf("place: %v %s", err, raw)
					return
				}
				steps := []string{"pay", "cancel"}
				if (c+i)%4 == 0 {
					steps = steps[:1] // a quarter stay paid and count in sales
				}
				for _, step := range steps {
					if resp, raw, err := writer.send(http.MethodPost, "/v1/orders/"+placed.OrderID+"/"+step, tok, map[string]any{}, nil, nil); err != nil || resp.StatusCode != http.StatusOK {
						errs <- fmt.Errorf("%s: %v %s", step, err, raw)
						return
					}
				}
				progress.Add(1)
				time.Sleep(1500 * time.Millisecond) // spread the orders over the handover
			}
		}()
	}
	for c := 0; c < 2; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				delta := 1 + i%9
				if c == 1 {
					delta = -delta
				}
				if resp, raw, err := writer.send(http.MethodPost, "/v1/inventory/"+skus[i%2]+"/adjustments", admin,
					map[string]any{"delta": delta, "reason": "recount"}, nil, nil); err != nil || resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("adjust: %v %s", err, raw)
					return
				}
				time.Sleep(45 * time.Millisecond)
			}
		}()
	}
	for progress.Load() < 12 && len(errs) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	applied := func(p *system) float64 {
		return counter(t, p.main, "jetcqrs_projection_events_applied_total", "orders") +
			counter(t, p.main, "jetcqrs_projection_events_applied_total", "inventory")
	}
	// Stop the process the partitions are pinned to, once it has worked.
	var holder *system
	for deadline := time.Now().Add(time.Minute); holder == nil; time.Sleep(10 * time.Millisecond) {
		for _, p := range projectors {
			if applied(p) > 0 && (holder == nil || applied(p) > applied(holder)) {
				holder = p
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no projector process applied anything within a minute")
		}
	}
	holder.stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	standby := projectors[0]
	if standby == holder {
		standby = projectors[1]
	}
	writer.awaitCaughtUp(standby, time.Minute)
	writer.checkReadModelsMatchWriteSide(standby.main, false)
	orders := writer.writeOrders()
	cancelled := 0
	for _, o := range orders {
		if o.Status == string(domain.StatusCancelled) {
			cancelled++
		}
	}
	if len(orders) != 60 || cancelled != 45 {
		t.Fatalf("the write side has %d orders, %d cancelled; want 60, 45", len(orders), cancelled)
	}
	var split []float64
	var byOthers float64
	for _, p := range projectors {
		split = append(split, applied(p))
		if p != holder {
			byOthers += applied(p)
		}
	}
	if applied(holder) == 0 || byOthers == 0 {
		t.Errorf("order and inventory events applied per projector process: %v; want the stopped one and the others to have worked", split)
	}
	t.Logf("order and inventory events applied per projector process: %v", split)
}

// TestProjectorRestartLosesNothing stops the only projector process while
// commands flow and starts a new one: the read models converge to the write
// side, nothing lost, nothing applied out of order.
func TestProjectorRestartLosesNothing(t *testing.T) {
	writer := startSystem(t, testConfig(t), Components{CommandAPI: true, Relay: true})
	admin := writer.token("ops", domain.RoleAdmin)
	first := startPeer(t, writer, Components{Projector: true})
	skus := writer.seedCatalog(admin, "RST", 6, 100_000)
	w := writer.startWorkload(admin, skus, 4, 0)
	w.waitFor(150)
	stopping := time.Now()
	first.stop()
	t.Logf("the first projector stopped in %s", time.Since(stopping))
	stoppedAt := w.count.Load()
	w.waitFor(stoppedAt + 150)
	second := startPeer(t, writer, Components{Projector: true})
	w.waitFor(stoppedAt + 300)
	commands := w.stop()

	writer.awaitCaughtUp(second, time.Minute)
	writer.checkReadModelsMatchWriteSide(second.main, false)
	appliedFirst := counter(t, first.main, "jetcqrs_projection_events_applied_total", "orders")
	appliedSecond := counter(t, second.main, "jetcqrs_projection_events_applied_total", "orders")
	if appliedFirst == 0 || appliedSecond == 0 {
		t.Errorf("order events applied: %v by the first projector, %v by the second; want both to have worked", appliedFirst, appliedSecond)
	}
	t.Logf("%d commands; the first projector stopped after %d; order events applied %v + %v", commands, stoppedAt, appliedFirst, appliedSecond)
}
