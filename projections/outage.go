package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Outage is a read model's store failing to apply events, for as long as it
// has not applied any since.
type Outage struct {
	Projection string    `json:"projection"`
	Since      time.Time `json:"since"`
	// Reply is the store's reply to the last attempt (see StoreReply), Error
	// the whole error.
	Reply    string `json:"reply"`
	Error    string `json:"error"`
	Failures int64  `json:"failures"`
}

// outages records, per projection, the store failures since its last
// successful apply.
type outages struct {
	mu  sync.Mutex
	now map[string]*Outage
}

func newOutages() *outages { return &outages{now: map[string]*Outage{}} }

func (o *outages) failed(projection string, err error, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cur := o.now[projection]
	if cur == nil {
		cur = &Outage{Projection: projection, Since: at}
		o.now[projection] = cur
	}
	cur.Reply, cur.Error = StoreReply(err), err.Error()
	cur.Failures++
}

func (o *outages) applied(projection string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.now, projection)
}

func (o *outages) of(projection string) *Outage {
	o.mu.Lock()
	defer o.mu.Unlock()
	if cur := o.now[projection]; cur != nil {
		c := *cur
		return &c
	}
	return nil
}

// Outages lists the projections whose store failed its last attempt to apply
// events and has applied none since: the runtime is waiting it out.
func (r *Runtime) Outages() []Outage {
	var out []Outage
	for _, p := range r.projections {
		if o := r.outages.of(p.Name); o != nil {
			out = append(out, *o)
		}
	}
	return out
}

// Ready is a readiness check: an error naming every projection whose store
// is in an outage (see Outages), nil when there is none.
func (r *Runtime) Ready(context.Context) error {
	var errs []error
	for _, o := range r.Outages() {
		errs = append(errs, fmt.Errorf("projection %s (%s): store failing since %s (%d attempts): %s: %s",
			o.Projection, r.cfg.Generation, o.Since.UTC().Format(time.RFC3339), o.Failures, o.Reply, o.Error))
	}
	return errors.Join(errs...)
}
