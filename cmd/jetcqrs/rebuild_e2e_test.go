package main

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// TestRebuildBuildsANewGenerationAndSwitchesReaders rebuilds every read model
// from the stream while commands keep coming and readers keep reading: no read
// fails or goes back in time during the rebuild, the new generation answers
// every query as the old one did, matches the write side, and the old
// generation's consumers and keys are deleted.
func TestRebuildBuildsANewGenerationAndSwitchesReaders(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "RB", 6, 10_000)
	w := s.startWorkload(admin, skus, 3, 40)
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)
	before := s.snapshotReadSide(admin, skus)
	var orderIDs []string
	for k := range before.redis {
		if id, ok := strings.CutPrefix(k, s.cfg.RedisPrefix+"g1:order:"); ok {
			orderIDs = append(orderIDs, id)
		}
	}
	if len(orderIDs) < 20 {
		t.Fatalf("history too thin: %d orders", len(orderIDs))
	}

	// Readers through the rebuild: every order and product once seen must
	// stay readable.
	stopReading := make(chan struct{})
	var readers sync.WaitGroup
	var readErrs sync.Map
	readers.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopReading:
				return
			default:
			}
			for _, path := range []string{"/v1/orders/" + orderIDs[i%len(orderIDs)], "/v1/products/" + skus[i%len(skus)],
				"/v1/inventory/" + skus[i%len(skus)], "/v1/reports/sales?group_by=sku"} {
				resp, raw, err := s.send(http.MethodGet, path, admin, nil, nil, nil)
				if err != nil || resp.StatusCode != http.StatusOK {
					readErrs.Store(path, string(raw))
				}
			}
		}
	})
	// Writes through the rebuild too.
	w = s.startWorkload(admin, skus, 2, 0)

	for _, name := range projectionNames {
		var out struct{ Name, Generation string }
		s.expect(http.StatusAccepted, http.MethodPost, "/v1/admin/projections/"+name+"/rebuild", admin, nil, nil, &out)
		if out.Name != name || out.Generation != "g2" {
			t.Fatalf("rebuild %s: %+v, want generation g2", name, out)
		}
	}
	s.expectProblem(http.StatusConflict, string(domain.CodeConflict), http.MethodPost, "/v1/admin/projections/orders/rebuild", admin, nil, nil)
	s.expectProblem(http.StatusNotFound, string(domain.CodeNotFound), http.MethodPost, "/v1/admin/projections/nope/rebuild", admin, nil, nil)
	s.expectProblem(http.StatusForbidden, "forbidden", http.MethodPost, "/v1/admin/projections/orders/rebuild", s.token("u1", domain.RoleCustomer), nil, nil)

	deadline := time.Now().Add(time.Minute)
	for {
		var st []projectionStatus
		s.do(http.MethodGet, "/v1/admin/projections", admin, nil, nil, &st)
		done := len(st) == len(projectionNames) && !slices.ContainsFunc(st, func(p projectionStatus) bool {
			return p.Generation != "g2" || p.Rebuild != nil
		})
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every model switched to g2 within a minute: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.stop()
	close(stopReading)
	readers.Wait()
	readErrs.Range(func(k, v any) bool {
		t.Errorf("GET %s failed during the rebuild: %s", k, v)
		return true
	})
	s.awaitLive(admin, time.Minute)
	s.checkReadModelsMatchWriteSide(s.main, true)

	// The old generation goes once the grace period is over.
	deadline = time.Now().Add(10*time.Second + 30*time.Second)
	for {
		keys := redisKeys(t, s.cfg.RedisURL, s.cfg.RedisPrefix+"g1:")
		var left []string
		for _, name := range projectionNames {
			_, err := s.main.js.Consumer(t.Context(), jnats.DefaultStreamName, projections.ConsumerName(name, "g1", 0))
			if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				left = append(left, name)
			}
		}
		if len(keys) == 0 && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation g1 still has %d Redis keys and consumers of %v", len(keys), left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if g2 := redisKeys(t, s.cfg.RedisURL, s.cfg.RedisPrefix+"g2:"); len(g2) < len(before.redis) {
		t.Fatalf("generation g2 has %d Redis keys, g1 had %d", len(g2), len(before.redis))
	}
	for _, name := range projectionNames {
		st, _, err := s.main.record.Get(t.Context(), name)
		if gen := st.Live; err != nil || gen != 2 {
			t.Errorf("live generation of %s = %d, %v; want 2", name, gen, err)
		}
	}
}
