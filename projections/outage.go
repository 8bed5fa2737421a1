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

// outages records, per projection and partition, the store failures since
// the partition's last successful apply: a store that fails for some keys
// only (one shard of a cluster) is in an outage while any partition waits.
type outages struct {
	mu  sync.Mutex
	now map[string]map[int]*Outage
}

func newOutages() *outages { return &outages{now: map[string]map[int]*Outage{}} }

func (o *outages) failed(projection string, partition int, err error, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	parts := o.now[projection]
	if parts == nil {
		parts = map[int]*Outage{}
		o.now[projection] = parts
	}
	cur := parts[partition]
	if cur == nil {
		cur = &Outage{Projection: projection, Since: at}
		parts[partition] = cur
	}
	cur.Reply, cur.Error = StoreReply(err), err.Error()
	cur.Failures++
}

func (o *outages) applied(projection string, partition int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.now[projection], partition)
}

// of merges the partitions' outages of projection: since the earliest, with
// the reply of the one that began last and every failure; nil when no
// partition is waiting.
func (o *outages) of(projection string) *Outage {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out *Outage
	var latest time.Time
	for _, cur := range o.now[projection] {
		if out == nil {
			c := *cur
			out, latest = &c, cur.Since
			continue
		}
		out.Failures += cur.Failures
		if cur.Since.Before(out.Since) {
			out.Since = cur.Since
		}
		if cur.Since.After(latest) {
			latest, out.Reply, out.Error = cur.Since, cur.Reply, cur.Error
		}
	}
	return out
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
