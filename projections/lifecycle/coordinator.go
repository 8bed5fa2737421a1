package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetcqrs/jetcqrs/projections"
)

// coordinator carries one rebuild, in the process holding its lease, from
// preparation to retirement of the generation it replaced.
type coordinator struct {
	m    *Manager
	mm   *model
	name string
	st   State
	rev  uint64
	// fenced: since when the live generation's consumers are paused.
	fenced time.Time
	paused int // the live generation paused
}

// acquire takes the lease with a compare-and-set on the record.
func (c *coordinator) acquire(ctx context.Context) (drop []int, err error) {
	for {
		st, rev, err := c.m.cfg.Record.Get(ctx, c.name)
		if err != nil {
			return nil, err
		}
		next, drop, err := st.Acquire(c.m.cfg.Owner, time.Now(), c.m.cfg.LeaseTTL)
		if err != nil {
			return nil, err
		}
		rev, err = c.m.cfg.Record.Put(ctx, c.name, next, rev)
		if errors.Is(err, ErrChanged) {
			continue // read again: maybe someone else took it
		}
		if err != nil {
			return nil, err
		}
		c.st, c.rev = next, rev
		return drop, nil
	}
}

// put records the next state, from the one this coordinator last wrote.
func (c *coordinator) put(ctx context.Context, next State, err error) error {
	if err != nil {
		return err
	}
	rev, err := c.m.cfg.Record.Put(ctx, c.name, next, c.rev)
	if err != nil {
		return err
	}
	c.st, c.rev = next, rev
	return nil
}

// renew extends the lease when a third of it is used.
func (c *coordinator) renew(ctx context.Context) error {
	now := time.Now()
	if c.st.Expires.Sub(now) > c.m.cfg.LeaseTTL*2/3 {
		return nil
	}
	next, err := c.st.Renew(c.m.cfg.Owner, now, c.m.cfg.LeaseTTL)
	return c.put(ctx, next, err)
}

func (c *coordinator) log() []any {
	return []any{"projection", c.name, "generation", c.st.Rebuild, "live", c.st.Live, "phase", c.st.Phase}
}

func (c *coordinator) run(ctx context.Context, drop []int) {
	defer func() {
		c.m.mu.Lock()
		c.mm.coordinating = false
		c.m.mu.Unlock()
	}()
	logger := c.m.cfg.Logger
	if c.st.Phase == PhasePreparing {
		for _, gen := range drop {
			if err := c.m.dropGeneration(ctx, c.name, gen); err != nil {
				logger.Warn("rebuild: deleting what an interrupted rebuild left", "projection", c.name, "generation", gen, "err", err)
			}
		}
		if err := c.prepare(ctx); err != nil {
			c.abandon(ctx, fmt.Errorf("prepare: %w", err))
			return
		}
		logger.Info("rebuild started", c.log()...)
	}
	if c.st.Phase == PhaseBuilding {
		if err := c.build(ctx); err != nil {
			if ctx.Err() == nil && !errors.Is(err, ErrLeaseLost) && !errors.Is(err, ErrChanged) {
				c.abandon(ctx, err)
			} else if ctx.Err() == nil {
				logger.Warn("rebuild: lease lost; another process carries it on", append(c.log(), "err", err)...)
			}
			return
		}
	}
	if c.st.Phase == PhaseRetiring {
		if err := c.retire(ctx); err != nil && ctx.Err() == nil {
			logger.Warn("rebuild: retiring the replaced generation", append(c.log(), "err", err)...)
		}
	}
}

// prepare creates the new generation empty, then lets every projector
// process apply it.
func (c *coordinator) prepare(ctx context.Context) error {
	if err := c.m.deleteConsumers(ctx, c.name, c.st.Rebuild); err != nil {
		return err
	}
	md, err := c.m.cfg.Open(ctx, c.name, c.st.Rebuild, true)
	if err != nil {
		return err
	}
	md.Close()
	next, err := c.st.Ready(c.m.cfg.Owner)
	return c.put(ctx, next, err)
}

// build waits until Decide promotes the new generation, renewing the lease.
func (c *coordinator) build(ctx context.Context) (err error) {
	defer func() {
		if c.paused != 0 {
			c.resume(context.WithoutCancel(ctx))
		}
	}()
	gen := c.st.Rebuild
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := c.renew(ctx); err != nil {
			return err
		}
		f, err := c.facts(ctx)
		if err != nil {
			c.m.cfg.Logger.Debug("rebuild: progress unknown", append(c.log(), "err", err)...)
			continue
		}
		step := Decide(f)
		switch step {
		case Fence:
			if err := c.pause(ctx); err != nil {
				c.m.cfg.Logger.Warn("rebuild: pausing the live generation", append(c.log(), "err", err)...)
				c.resume(ctx)
			}
		case Unfence:
			c.resume(ctx)
		case Abandon:
			return errors.New("the new generation lost its data")
		case Promote:
			live := c.st.Live
			next, err := c.st.Promote(c.m.cfg.Owner, gen)
			if err := c.put(ctx, next, err); err != nil {
				return err
			}
			c.paused = 0 // the old generation is retired, paused
			c.m.cfg.Logger.Info("rebuild caught up; generation promoted", "projection", c.name, "generation", gen, "replacing", live)
			return nil
		}
		if time.Since(lastLog) >= 5*time.Second {
			c.m.cfg.Logger.Info("rebuild progress", append(c.log(), "pending", f.Next.Pending, "step", step.String())...)
			lastLog = time.Now()
		}
	}
}

func (c *coordinator) facts(ctx context.Context) (Facts, error) {
	// The live generation first: the new one is compared with what the
	// live one had at most.
	live, _, err := c.m.progress(ctx, c.name, c.st.Live)
	if err != nil {
		return Facts{}, err
	}
	next, _, err := c.m.progress(ctx, c.name, c.st.Rebuild)
	if err != nil {
		return Facts{}, err
	}
	f := Facts{Live: live, Next: next, NextIntact: true, Fenced: c.paused != 0}
	if f.Fenced {
		f.FencedFor = time.Since(c.fenced)
	}
	if md := c.open(); md != nil {
		if mk, ok := md.(Marker); ok {
			marked, err := mk.Marked(ctx)
			if err != nil {
				return Facts{}, err
			}
			f.NextIntact = marked
		}
	}
	return f, nil
}

// open returns this process's instance of the generation being built.
func (c *coordinator) open() Model { return c.m.instance(c.mm, c.st.Rebuild) }

// pause fences the live generation: its consumers deliver nothing more for
// a while (they resume on their own after MaxFence and the lease, should
// this process die).
func (c *coordinator) pause(ctx context.Context) error {
	until := time.Now().Add(MaxFence + c.m.cfg.LeaseTTL)
	for part := 0; part < c.m.cfg.Runtime.Partitions; part++ {
		cn := projections.ConsumerName(c.name, GenerationName(c.st.Live), part)
		if _, err := c.m.cfg.JS.PauseConsumer(ctx, c.m.cfg.Runtime.Stream, cn, until); err != nil {
			return err
		}
	}
	c.paused, c.fenced = c.st.Live, time.Now()
	return nil
}

func (c *coordinator) resume(ctx context.Context) {
	for part := 0; part < c.m.cfg.Runtime.Partitions; part++ {
		cn := projections.ConsumerName(c.name, GenerationName(c.paused), part)
		if _, err := c.m.cfg.JS.ResumeConsumer(ctx, c.m.cfg.Runtime.Stream, cn); err != nil {
			c.m.cfg.Logger.Debug("rebuild: resuming the live generation", "consumer", cn, "err", err)
		}
	}
	c.paused = 0
}

// abandon takes the new generation out of the record, then deletes it.
func (c *coordinator) abandon(ctx context.Context, why error) {
	gen := c.st.Rebuild
	c.m.cfg.Logger.Error("rebuild abandoned", append(c.log(), "err", why)...)
	ctx = context.WithoutCancel(ctx)
	next, err := c.st.Abandon(c.m.cfg.Owner)
	if err := c.put(ctx, next, err); err != nil {
		c.m.cfg.Logger.Warn("rebuild: lease lost; the generation stays for its new owner", "projection", c.name, "generation", gen, "err", err)
		return
	}
	if err := c.m.dropGeneration(ctx, c.name, gen); err != nil {
		c.m.cfg.Logger.Warn("rebuild: deleting the abandoned generation", "projection", c.name, "generation", gen, "err", err)
	}
}

// retire points a store's own readers at the promoted generation, waits for
// the grace period, deletes the replaced generation and frees the lease.
func (c *coordinator) retire(ctx context.Context) error {
	md, local := c.m.instance(c.mm, c.st.Live), true
	if md == nil {
		var err error
		if md, err = c.m.cfg.Open(ctx, c.name, c.st.Live, false); err != nil {
			return err
		}
		local = false
	}
	var err error
	if ex, ok := md.(Exposer); ok {
		err = ex.Expose(ctx)
	}
	if !local {
		md.Close()
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(c.m.cfg.RetireGrace)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Until(deadline), c.m.cfg.LeaseTTL/4)):
		}
		if err := c.renew(ctx); err != nil {
			return err
		}
	}
	if c.st.Retiring >= 1 {
		if err := c.m.dropGeneration(ctx, c.name, c.st.Retiring); err != nil {
			return err
		}
		c.m.cfg.Logger.Info("old generation deleted", "projection", c.name, "generation", c.st.Retiring)
	}
	next, err := c.st.Retired(c.m.cfg.Owner)
	return c.put(ctx, next, err)
}
