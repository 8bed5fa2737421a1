package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// retireGrace is how long a replaced generation is kept after the switch:
// reads already under way on it finish, and projector processes elsewhere
// notice the switch and stop its workers (they check when its consumers
// vanish), before its consumers and data are deleted.
const retireGrace = 10 * time.Second

// projector runs this process's projections: one projections.Runtime per
// read model and generation, so that a rebuild can build a new generation
// beside the live one and retire the old one on its own.
type projector struct {
	m *Main

	mu       sync.Mutex
	ctx      context.Context        // Run's; nil before Run
	running  map[string]*runningGen // the live generation's runtime, by model
	rebuilds map[string]*rebuild    // by model, while one is under way
	errs     chan error             // a runtime that failed for good
	wg       sync.WaitGroup
}

type runningGen struct {
	model  *readModel
	rt     *projections.Runtime
	cancel context.CancelFunc
	done   chan struct{}
}

type rebuild struct {
	target   *runningGen // nil while it is being set up
	revision uint64      // of the live generation it replaces, for the promotion
}

// errRebuildUnderWay and errNoSuchProjection are the rebuild's refusals.
var (
	errRebuildUnderWay  = errors.New("a rebuild of this read model is under way")
	errNoSuchProjection = errors.New("no such projection in this process")
)

func newProjector(m *Main) *projector {
	return &projector{m: m, running: map[string]*runningGen{}, rebuilds: map[string]*rebuild{}, errs: make(chan error, 8)}
}

func (p *projector) newRuntime(rm *readModel) (*projections.Runtime, error) {
	spec, _ := specOf(rm.name)
	name, gen := rm.name, rm.generation
	return projections.NewRuntime(p.m.js, projections.Config{
		Partitions: p.m.cfg.Partitions,
		Generation: generationName(gen),
		Logger:     p.m.logger,
		Registry:   p.m.registry,
		OnApplied:  p.m.publishApplied,
		Retired: func(ctx context.Context) bool {
			live, _, err := p.m.gens.Live(ctx, name)
			return err == nil && live > gen
		},
	}, []projections.Projection{{Name: name, AggregateTypes: spec.aggregateTypes, EventTypes: spec.eventTypes,
		Store: rm.store, CommitInterval: spec.commitInterval}})
}

// startLocked runs rm's projection in a runtime of its own until ctx ends,
// the runtime is stopped, or it fails (reported on errs). p.mu is held.
func (p *projector) startLocked(rm *readModel) (*runningGen, error) {
	rt, err := p.newRuntime(rm)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(p.ctx)
	rg := &runningGen{model: rm, rt: rt, cancel: cancel, done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(rg.done)
		if err := rt.Run(ctx); err != nil && ctx.Err() == nil {
			select {
			case p.errs <- fmt.Errorf("projection %s %s: %w", rm.name, generationName(rm.generation), err):
			default:
			}
		}
	}()
	return rg, nil
}

// Run applies every live read model until ctx ends or a runtime fails for
// good, then waits for every runtime to drain.
func (p *projector) Run(ctx context.Context) error {
	p.mu.Lock()
	p.ctx = ctx
	for _, spec := range projectionSpecs {
		rm := p.m.live.get(spec.name)
		if rm == nil {
			continue
		}
		rg, err := p.startLocked(rm)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		p.running[spec.name] = rg
	}
	p.mu.Unlock()
	err := p.m.gens.Watch(ctx, p.m.onPromoted)
	if err == nil {
		p.wg.Go(func() { p.watchForLostData(ctx) })
		select {
		case <-ctx.Done():
		case err = <-p.errs:
		}
	}
	p.mu.Lock()
	for _, rg := range p.running {
		rg.cancel()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// lostDataCheck is how often the projector checks that no store lost its data.
const lostDataCheck = 5 * time.Second

// watchForLostData rebuilds a live read model whose store lost its data
// while its consumers kept their progress (Redis restarted without
// persistence, or flushed): events already acknowledged are not delivered
// again, so only a rebuild from the stream brings them back. (A generation
// is marked when it is created: see markNew.)
func (p *projector) watchForLostData(ctx context.Context) {
	t := time.NewTicker(lostDataCheck)
	defer t.Stop()
	for {
		for _, spec := range projectionSpecs {
			p.checkLostData(ctx, spec.name)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *projector) checkLostData(ctx context.Context, name string) {
	p.mu.Lock()
	rg, rebuilding := p.running[name], p.rebuilds[name] != nil
	p.mu.Unlock()
	if rg == nil || rg.model.marked == nil || rebuilding {
		return
	}
	ok, err := rg.model.marked(ctx)
	if err != nil || ok {
		return // unreachable now (the workers retry), or intact
	}
	p.m.logger.Warn("read model lost its data (its store restarted without persistence, or was flushed); rebuilding it",
		"projection", name, "generation", rg.model.generation)
	if _, err := p.Rebuild(ctx, name); err != nil && !errors.Is(err, errRebuildUnderWay) {
		p.m.logger.Error("rebuild after data loss", "projection", name, "err", err)
	}
}

// Rebuild starts building the next generation of the named read model from
// the whole stream, beside the live one, and returns that generation. When
// it has caught up with the stream it is promoted: every process switches
// its readers to it and the old generation is retired and deleted.
func (p *projector) Rebuild(ctx context.Context, name string) (int, error) {
	p.mu.Lock()
	if p.ctx == nil || p.running[name] == nil {
		p.mu.Unlock()
		return 0, fmt.Errorf("%w: %q", errNoSuchProjection, name)
	}
	if r := p.rebuilds[name]; r != nil {
		p.mu.Unlock()
		return 0, errRebuildUnderWay
	}
	state := &rebuild{}
	p.rebuilds[name] = state
	p.mu.Unlock()

	target, err := p.setUp(ctx, name, state)
	if err != nil {
		p.mu.Lock()
		delete(p.rebuilds, name)
		p.mu.Unlock()
		return 0, err
	}
	go p.promoteWhenCaughtUp(name, state)
	return target, nil
}

func (p *projector) setUp(ctx context.Context, name string, state *rebuild) (int, error) {
	live, revision, err := p.m.gens.Live(ctx, name)
	if err != nil {
		return 0, err
	}
	target := live + 1
	// What an interrupted rebuild to the same generation left behind, and
	// the generation before the live one, if a stop kept it from being
	// deleted after the last switch.
	if err := p.deleteConsumers(ctx, name, target); err != nil {
		return 0, err
	}
	if live > 1 {
		if err := p.deleteConsumers(ctx, name, live-1); err != nil {
			return 0, err
		}
		prev, err := p.m.openReadModel(ctx, name, live-1, false)
		if err != nil {
			return 0, err
		}
		err = prev.drop(ctx)
		prev.close()
		if err != nil {
			return 0, err
		}
	}
	rm, err := p.m.openReadModel(ctx, name, target, true)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rg, err := p.startLocked(rm)
	if err != nil {
		rm.close()
		return 0, err
	}
	state.target, state.revision = rg, revision
	p.m.logger.Info("rebuild started", "projection", name, "generation", target, "replacing", live)
	return target, nil
}

// promoteWhenCaughtUp waits until the new generation has applied the whole
// stream (caughtUp), showing progress, then promotes it.
func (p *projector) promoteWhenCaughtUp(name string, state *rebuild) {
	ctx, rg := p.ctx, state.target
	gen := rg.model.generation
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			// Abandoned with the process; the next rebuild starts over.
			<-rg.done
			rg.model.close()
			return
		case <-rg.done:
			p.abandon(name, state, errors.New("its runtime stopped"))
			return
		case <-tick.C:
		}
		st, err := rg.rt.Status(ctx)
		if err == nil && len(st) == 1 && p.caughtUp(ctx, name, st[0]) {
			break
		}
		if time.Since(lastLog) >= 5*time.Second && err == nil && len(st) == 1 {
			p.m.logger.Info("rebuild progress", "projection", name, "generation", gen,
				"last_seq", st[0].LastSeq, "pending", st[0].Pending)
			lastLog = time.Now()
		}
	}
	if rg.model.expose != nil {
		if err := rg.model.expose(ctx); err != nil {
			p.abandon(name, state, err)
			return
		}
	}
	if err := p.m.gens.Promote(ctx, name, gen, state.revision); err != nil {
		p.abandon(name, state, err)
		return
	}
	p.m.logger.Info("rebuild caught up; generation promoted", "projection", name, "generation", gen)
	// The generations watch (onPromoted) switches the readers and retires
	// the old generation.
}

// caughtUp reports whether the new generation, in state next, has caught up:
// nothing pending, or (under steady traffic, where stores that commit in
// groups always have a little pending) no more than the live generation has.
func (p *projector) caughtUp(ctx context.Context, name string, next projections.Status) bool {
	if next.State == "live" {
		return true
	}
	if next.State != "catching_up" {
		return false // consumers still being created
	}
	p.mu.Lock()
	live := p.running[name]
	p.mu.Unlock()
	st, err := live.rt.Status(ctx)
	return err == nil && len(st) == 1 && next.Pending <= st[0].Pending
}

// abandon stops a rebuild that cannot be promoted and deletes what it built.
func (p *projector) abandon(name string, state *rebuild, why error) {
	p.m.logger.Error("rebuild abandoned", "projection", name, "generation", state.target.model.generation, "err", why)
	state.target.cancel()
	<-state.target.done
	ctx := context.WithoutCancel(p.ctx)
	if err := p.deleteConsumers(ctx, name, state.target.model.generation); err != nil {
		p.m.logger.Warn("rebuild: deleting consumers", "err", err)
	}
	if err := state.target.model.drop(ctx); err != nil {
		p.m.logger.Warn("rebuild: dropping data", "err", err)
	}
	state.target.model.close()
	p.mu.Lock()
	delete(p.rebuilds, name)
	p.mu.Unlock()
}

// builtHere returns the model of generation gen of name if this process
// built it, so that it is used as it is rather than opened a second time.
func (p *projector) builtHere(name string, gen int) *readModel {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.rebuilds[name]; r != nil && r.target != nil && r.target.model.generation == gen {
		return r.target.model
	}
	return nil
}

// retire makes rm's runtime the one this process runs for its model, stops
// the runtime of the generation it replaced, and, in the process that built
// rm, deletes the old generation's consumers and data after retireGrace.
func (p *projector) retire(old, rm *readModel) {
	p.mu.Lock()
	state := p.rebuilds[rm.name]
	builder := state != nil && state.target != nil && state.target.model == rm
	prev := p.running[rm.name]
	var next *runningGen
	if builder {
		next = state.target
	} else if p.ctx != nil {
		// Built elsewhere: run it here too, as a standby of its partitions.
		var err error
		if next, err = p.startLocked(rm); err != nil {
			p.m.logger.Error("start the promoted generation", "projection", rm.name, "err", err)
		}
	}
	if next != nil {
		p.running[rm.name] = next
	}
	p.mu.Unlock()
	if prev != nil {
		prev.cancel()
		<-prev.done
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx := p.ctx
		select {
		case <-ctx.Done():
			// Stopping: the old generation's consumers and data stay until
			// the next rebuild of this model deletes them.
			old.close()
			return
		case <-time.After(retireGrace):
		}
		if builder {
			if err := p.deleteConsumers(ctx, old.name, old.generation); err != nil {
				p.m.logger.Warn("retire: deleting consumers", "projection", old.name, "err", err)
			}
			if err := old.drop(ctx); err != nil {
				p.m.logger.Warn("retire: dropping data", "projection", old.name, "err", err)
			}
			p.m.logger.Info("old generation deleted", "projection", old.name, "generation", old.generation)
		}
		old.close()
		if builder {
			p.mu.Lock()
			delete(p.rebuilds, rm.name)
			p.mu.Unlock()
		}
	}()
}

// markNew marks rm, at the start of a projector process, if its generation
// was never marked and none of its consumers has applied anything: a new
// deployment. Otherwise the marker stays missing and watchForLostData
// rebuilds the model (its data was lost while the process was down, or it
// was written by a build that did not mark its models).
func (m *Main) markNew(ctx context.Context, rm *readModel) error {
	if ok, err := rm.marked(ctx); err != nil || ok {
		return err
	}
	for part := 0; part < m.cfg.Partitions; part++ {
		c, err := m.js.Consumer(ctx, jnats.DefaultStreamName, projections.ConsumerName(rm.name, generationName(rm.generation), part))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if c.CachedInfo().AckFloor.Stream > 0 {
			return nil
		}
	}
	return rm.mark(ctx)
}

// deleteConsumers deletes the consumers of generation gen of a projection.
func (p *projector) deleteConsumers(ctx context.Context, name string, gen int) error {
	for part := 0; part < p.m.cfg.Partitions; part++ {
		c := projections.ConsumerName(name, generationName(gen), part)
		err := p.m.js.DeleteConsumer(ctx, jnats.DefaultStreamName, c)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s: %w", c, err)
		}
	}
	return nil
}

// Status reports each live projection, with the generation being built
// beside it, if any.
func (p *projector) Status(ctx context.Context) ([]projections.Status, error) {
	p.mu.Lock()
	type pair struct{ live, next *runningGen }
	var runs []pair
	for _, spec := range projectionSpecs {
		if rg := p.running[spec.name]; rg != nil {
			pr := pair{live: rg}
			if r := p.rebuilds[spec.name]; r != nil && r.target != nil && r.target != rg {
				pr.next = r.target
			}
			runs = append(runs, pr)
		}
	}
	p.mu.Unlock()
	out := make([]projections.Status, 0, len(runs))
	for _, r := range runs {
		st, err := r.live.rt.Status(ctx)
		if err != nil {
			return nil, err
		}
		if r.next != nil {
			next, err := r.next.rt.Status(ctx)
			if err != nil {
				return nil, err
			}
			st[0].Rebuild = &next[0]
		}
		out = append(out, st...)
	}
	return out, nil
}

// runtimes returns the runtimes of the live generations.
func (p *projector) runtimes() []*projections.Runtime {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*projections.Runtime
	for _, spec := range projectionSpecs {
		if rg := p.running[spec.name]; rg != nil {
			out = append(out, rg.rt)
		}
	}
	return out
}

// DeadLetters lists dead letters of every projection (or one).
func (p *projector) DeadLetters(ctx context.Context, projection string, limit int) ([]projections.DeadLetter, error) {
	rts := p.runtimes()
	if len(rts) == 0 {
		return nil, errors.New("the projector is not running")
	}
	return rts[0].DeadLetters(ctx, projection, limit)
}

// Replay applies a dead letter again through the runtime of its projection.
func (p *projector) Replay(ctx context.Context, dlqSeq uint64) error {
	for _, rt := range p.runtimes() {
		err := rt.Replay(ctx, dlqSeq)
		if !errors.Is(err, projections.ErrNotThisProjection) {
			return err
		}
	}
	return fmt.Errorf("dead letter %d: %w", dlqSeq, projections.ErrNotThisProjection)
}

// onPromoted follows a generation switch recorded by any process: the
// readers move to the new generation and this process's projector, if any,
// retires the old one.
func (m *Main) onPromoted(name string, gen int) {
	current := m.live.get(name)
	if current == nil || current.generation >= gen {
		return // not kept here, or already there
	}
	var rm *readModel
	if m.projector != nil {
		rm = m.projector.builtHere(name, gen)
	}
	if rm == nil {
		var err error
		if rm, err = m.openReadModel(context.Background(), name, gen, false); err != nil {
			m.logger.Error("open the promoted generation", "projection", name, "generation", gen, "err", err)
			return
		}
	}
	old := m.live.set(rm)
	m.logger.Info("read model switched", "projection", name, "generation", gen)
	if m.projector != nil {
		m.projector.retire(old, rm)
		return
	}
	time.AfterFunc(retireGrace, old.close)
}

// mountRebuild serves POST /v1/admin/projections/{name}/rebuild.
func (m *Main) mountRebuild(r chi.Router, tokens *auth.Tokens) {
	r.With(httpx.Authenticate(tokens), requireAdmin).Post("/v1/admin/projections/{name}/rebuild",
		func(w http.ResponseWriter, req *http.Request) {
			name := chi.URLParam(req, "name")
			gen, err := m.projector.Rebuild(req.Context(), name)
			switch {
			case errors.Is(err, errNoSuchProjection):
				httpx.WriteProblem(w, req, domain.CodeNotFound, err.Error())
			case errors.Is(err, errRebuildUnderWay):
				httpx.WriteProblem(w, req, domain.CodeConflict, err.Error())
			case err != nil:
				httpx.WriteError(w, req, m.logger, err)
			default:
				httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"name": name, "generation": generationName(gen)})
			}
		})
}
