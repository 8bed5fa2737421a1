package queryapi

import (
	"context"
	"sync"
)

// Hub wakes read-your-writes waiters when a projector reports it applied
// events of an aggregate. It only wakes: each waiter re-reads the version from
// its read model, so a lost or early notification costs a wait, never a
// wrong answer.
type Hub struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{waiters: map[string]map[chan struct{}]struct{}{}} }

func hubKey(aggType, id string) string { return aggType + ":" + id }

// Notify wakes every waiter on the aggregate.
func (h *Hub) Notify(aggType, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.waiters[hubKey(aggType, id)] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// WaitFor returns when ready reports true, checking it once at the start
// and again after each notification for the aggregate, or with ctx's error.
func (h *Hub) WaitFor(ctx context.Context, aggType, id string, ready func(context.Context) (bool, error)) error {
	ch := make(chan struct{}, 1)
	key := hubKey(aggType, id)
	h.mu.Lock()
	if h.waiters[key] == nil {
		h.waiters[key] = map[chan struct{}]struct{}{}
	}
	h.waiters[key][ch] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiters[key], ch)
		if len(h.waiters[key]) == 0 {
			delete(h.waiters, key)
		}
		h.mu.Unlock()
	}()
	for {
		// Registered before the check: a notification between the check and
		// the select is not lost.
		ok, err := ready(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
