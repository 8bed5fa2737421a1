package projections

import (
	"context"
	"slices"
	"sync"
	"time"
)

// groupCommit combines the batches that a projection's partition workers
// apply at the same time into one Apply of the store (group commit). Stores
// whose every write has a high fixed cost gain the most: each Bleve batch is
// a segment the index later merges, each ClickHouse INSERT a part.
//
// One caller at a time leads: it takes the queued batches (its own first),
// waits until interval has passed since the previous combined Apply began
// (batches queue up meanwhile), applies them as one and hands the lead to the
// next queued caller. An idle store is written at once; a busy one at most
// once per interval. Each caller still gets its own batch's outcome: when the
// combined Apply reports a poison event, every batch is applied again on its
// own, so the poison is reported to the worker that delivered it and nobody
// else's events wait on it (re-applying is safe: Apply is idempotent); the
// same for a batch the store rejects (ErrRejected) or whose apply panics. Any other failure is
// the store's, and every caller gets it to retry.
type groupCommit struct {
	store     Applier
	interval  time.Duration
	maxEvents int

	mu        sync.Mutex
	queue     []*commitCall
	leading   bool
	lastStart time.Time
}

type commitCall struct {
	events []Envelope
	err    error
	done   chan struct{} // closed when err is set
	lead   chan struct{} // receives when the caller is to lead
}

func newGroupCommit(store Applier, interval time.Duration, maxEvents int) *groupCommit {
	return &groupCommit{store: store, interval: interval, maxEvents: maxEvents}
}

// Apply applies events, combined with other callers' batches.
func (g *groupCommit) Apply(ctx context.Context, events []Envelope) error {
	c := &commitCall{events: events, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if !g.leading {
		g.leading = true
		g.mu.Unlock()
		return g.leadWith(ctx, c)
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-c.lead:
		return g.leadWith(ctx, c)
	case <-ctx.Done():
		g.mu.Lock()
		if i := slices.Index(g.queue, c); i >= 0 {
			// Not taken yet: leave. Were the lead handed to it meanwhile,
			// pass it on.
			g.queue = slices.Delete(g.queue, i, i+1)
			select {
			case <-c.lead:
				g.handOffLocked()
			default:
			}
			g.mu.Unlock()
			return ctx.Err()
		}
		g.mu.Unlock()
		// A leader holds the batch; its outcome comes soon.
		<-c.done
		return c.err
	}
}

// leadWith runs one combined Apply for self (at the head of the queue) and
// whatever queued behind it, then hands the lead on.
func (g *groupCommit) leadWith(ctx context.Context, self *commitCall) error {
	g.mu.Lock()
	wait := time.Until(g.lastStart.Add(g.interval))
	g.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}

	g.mu.Lock()
	g.lastStart = time.Now()
	n, total := 0, 0
	for n < len(g.queue) && (n == 0 || total+len(g.queue[n].events) <= g.maxEvents) {
		total += len(g.queue[n].events)
		n++
	}
	calls := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	g.mu.Unlock()

	if ctx.Err() != nil {
		for _, c := range calls {
			c.err = ctx.Err()
		}
	} else if len(calls) == 1 {
		calls[0].err = g.store.Apply(ctx, calls[0].events)
	} else {
		combined := make([]Envelope, 0, total)
		for _, c := range calls {
			combined = append(combined, c.events...)
		}
		err := g.store.Apply(ctx, combined)
		switch {
		case eventsFault(err):
			for _, c := range calls {
				c.err = g.store.Apply(ctx, c.events)
			}
		case err != nil: // the store failed, not an event: everyone retries
			for _, c := range calls {
				c.err = err
			}
		}
	}

	g.mu.Lock()
	g.handOffLocked()
	g.mu.Unlock()
	for _, c := range calls {
		if c != self {
			close(c.done)
		}
	}
	return self.err
}

// handOffLocked gives the lead to the first queued caller, if any.
func (g *groupCommit) handOffLocked() {
	if len(g.queue) == 0 {
		g.leading = false
		return
	}
	g.queue[0].lead <- struct{}{}
}
