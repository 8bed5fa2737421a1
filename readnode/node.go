// Package readnode runs a read node: a query process that keeps its own
// read models, fed from the stream, so that reads scale out with processes
// that need nothing but the binary and a disk. Each model it keeps (the
// catalog always, in Bleve; orders, inventory and sales when no shared
// engine holds them, in bbolt) is applied by an ordered consumer of its own
// from a checkpoint kept in the same transaction as the data; the node never
// joins the projectors' consumer groups and leaves no consumer behind when
// it stops. Its generations are recorded in a file of its data directory
// (FileRecord) and moved through the lifecycle package's states, so a
// rebuild happens beside the live generation and a process killed at any
// point resumes where it stood.
package readnode

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// Config configures a Node.
type Config struct {
	// Dir is the node's data directory, used by this node alone.
	Dir string
	JS  jetstream.JetStream
	// Stream is the event stream (default EVENTS).
	Stream string
	// Models are the models the node keeps itself: Catalog, and any of
	// Orders, Inventory, Sales.
	Models []string
	// Hub is woken for every aggregate a local model applied.
	Hub         *queryapi.Hub
	SearchCache *blevestore.SearchCacheMetrics
	Logger      *slog.Logger
	// BatchSize bounds one transaction (default 512).
	BatchSize int
	// InactiveThreshold is how soon the server forgets the consumer of a
	// node that went away without stopping (default 10s).
	InactiveThreshold time.Duration
	// RetireGrace is how long a replaced generation stays open for reads
	// under way (default 10s).
	RetireGrace time.Duration
}

// Node keeps the local models and serves them.
type Node struct {
	cfg    Config
	rec    *FileRecord
	owner  string
	target uint64
	models map[string]*model

	mu      sync.Mutex
	runCtx  context.Context
	stopped bool
	wg      sync.WaitGroup
}

type model struct {
	name string
	spec lifecycle.Spec
	live atomic.Pointer[generation]
	// guarded by Node.mu
	next         *generation
	coordinating bool
}

type generation struct {
	n      int
	st     store
	ap     *applier
	cancel context.CancelFunc
	done   chan struct{}
}

// ErrNoSuchModel: the node does not keep that model.
var ErrNoSuchModel = errors.New("readnode: this node does not keep that model")

// Open opens the node's record and every model at its live generation,
// finishing or undoing what a process stopped in the middle of a rebuild
// left, and replacing a generation whose files cannot be opened (cut short
// while being created) by a new one, rebuilt from the stream.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Stream == "" {
		cfg.Stream = "EVENTS"
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.InactiveThreshold <= 0 {
		cfg.InactiveThreshold = 10 * time.Second
	}
	if cfg.RetireGrace <= 0 {
		cfg.RetireGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.JS == nil || cfg.Dir == "" {
		return nil, errors.New("readnode: JS and Dir are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("readnode: %w", err)
	}
	rec, err := OpenFileRecord(filepath.Join(cfg.Dir, "readnode.db"))
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	n := &Node{cfg: cfg, rec: rec, owner: host + "/" + strconv.Itoa(os.Getpid()) + "/" + randSuffix(),
		models: map[string]*model{}}
	// The readiness target: the stream's last sequence as read now.
	s, err := cfg.JS.Stream(ctx, cfg.Stream)
	if err != nil {
		_ = rec.Close()
		return nil, fmt.Errorf("readnode: stream %s: %w", cfg.Stream, err)
	}
	n.target = s.CachedInfo().State.LastSeq
	for _, name := range cfg.Models {
		spec, ok := specs[name]
		if !ok || n.models[name] != nil {
			n.Close()
			return nil, fmt.Errorf("readnode: model %q unknown or twice", name)
		}
		mm := &model{name: name, spec: spec}
		n.models[name] = mm
		if err := n.openModel(ctx, mm); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

func randSuffix() string { return rand.Text()[:8] }

// openModel brings mm's record to a state this process can carry on from
// and opens its live generation.
func (n *Node) openModel(ctx context.Context, mm *model) error {
	st, rev, err := n.rec.Get(ctx, mm.name)
	if err != nil {
		return err
	}
	if st.Owner != "" && st.Owner != n.owner {
		// The record's file lock proves its previous owner is gone: this
		// process takes its lease over where it stood.
		st.Owner, st.Expires = n.owner, time.Now().Add(leaseTTL)
		if rev, err = n.rec.Put(ctx, mm.name, st, rev); err != nil {
			return err
		}
	}
	switch st.Phase {
	case lifecycle.PhasePreparing:
		if err := dropStore(n.cfg.Dir, mm.name, st.Rebuild); err != nil {
			return err
		}
		next, err := st.Abandon(n.owner)
		if err != nil {
			return err
		}
		if st, rev, err = n.put(ctx, mm.name, next, rev); err != nil {
			return err
		}
	case lifecycle.PhaseRetiring:
		if err := dropStore(n.cfg.Dir, mm.name, st.Retiring); err != nil {
			return err
		}
		next, err := st.Retired(n.owner)
		if err != nil {
			return err
		}
		if st, rev, err = n.put(ctx, mm.name, next, rev); err != nil {
			return err
		}
	}
	s, err := openStore(n.cfg.Dir, mm.name, st.Live, false, n.cfg.SearchCache)
	if err != nil {
		// A generation cut short while its files were created (or
		// otherwise unreadable): the model is derived data; start a new
		// generation from the stream in its place.
		n.cfg.Logger.Warn("a read model cannot be opened; rebuilding it from the stream",
			"model", mm.name, "generation", st.Live, "err", err)
		if s, st, err = n.replace(ctx, mm.name, st, rev); err != nil {
			return err
		}
	}
	mm.live.Store(n.attach(mm, &generation{n: st.Live, st: s}, n.target))
	if st.Phase == lifecycle.PhaseBuilding {
		bs, err := openStore(n.cfg.Dir, mm.name, st.Rebuild, false, n.cfg.SearchCache)
		if err != nil {
			n.cfg.Logger.Warn("the generation being built cannot be opened; it starts over", "model", mm.name, "err", err)
			if bs, err = openStore(n.cfg.Dir, mm.name, st.Rebuild, true, n.cfg.SearchCache); err != nil {
				return err
			}
		}
		mm.next = n.attach(mm, &generation{n: st.Rebuild, st: bs}, n.target)
	}
	return nil
}

// leaseTTL: a rebuild's lease outlasts any rebuild; the record is this
// node's alone, and its file lock, not the lease, keeps others out.
const leaseTTL = 7 * 24 * time.Hour

func (n *Node) put(ctx context.Context, name string, s lifecycle.State, rev uint64) (lifecycle.State, uint64, error) {
	rev, err := n.rec.Put(ctx, name, s, rev)
	return s, rev, err
}

// replace makes a new, empty generation live in place of st.Live, which
// cannot be opened, and deletes the old one.
func (n *Node) replace(ctx context.Context, name string, st lifecycle.State, rev uint64) (store, lifecycle.State, error) {
	next, drop, err := st.Acquire(n.owner, time.Now(), leaseTTL)
	if err != nil {
		return nil, st, err
	}
	for _, g := range drop {
		_ = dropStore(n.cfg.Dir, name, g)
	}
	if st, rev, err = n.put(ctx, name, next, rev); err != nil {
		return nil, st, err
	}
	s, err := openStore(n.cfg.Dir, name, st.Rebuild, true, n.cfg.SearchCache)
	if err != nil {
		return nil, st, err
	}
	steps := []func(lifecycle.State) (lifecycle.State, error){
		func(s lifecycle.State) (lifecycle.State, error) { return s.Ready(n.owner) },
		func(s lifecycle.State) (lifecycle.State, error) { return s.Promote(n.owner, s.Rebuild) },
	}
	for _, step := range steps {
		next, err := step(st)
		if err == nil {
			st, rev, err = n.put(ctx, name, next, rev)
		}
		if err != nil {
			s.close()
			return nil, st, err
		}
	}
	if err := dropStore(n.cfg.Dir, name, st.Retiring); err != nil {
		s.close()
		return nil, st, err
	}
	next, err = st.Retired(n.owner)
	if err == nil {
		st, _, err = n.put(ctx, name, next, rev)
	}
	if err != nil {
		s.close()
		return nil, st, err
	}
	return s, st, nil
}

// Run applies every local model until ctx ends, and carries on a rebuild
// the previous process left building.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	n.runCtx = ctx
	for _, name := range n.cfg.Models {
		mm := n.models[name]
		n.startLocked(ctx, mm.live.Load())
		if g := mm.next; g != nil {
			n.startLocked(ctx, g)
			mm.coordinating = true
			n.wg.Go(func() { n.coordinate(ctx, mm, g) })
		}
	}
	n.mu.Unlock()
	<-ctx.Done()
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
	n.wg.Wait()
	return nil
}

// attach gives g the applier that will feed it, before anything reads g.
func (n *Node) attach(mm *model, g *generation, target uint64) *generation {
	interval := time.Duration(0)
	if mm.name == Catalog {
		interval = mm.spec.CommitInterval
	}
	g.ap = &applier{name: mm.name, gen: g.n, spec: mm.spec, st: g.st, js: n.cfg.JS, stream: n.cfg.Stream,
		target: target, interval: interval, batchSize: n.cfg.BatchSize, inactive: n.cfg.InactiveThreshold,
		log: n.cfg.Logger.With("model", mm.name, "generation", g.n), caughtUp: make(chan struct{})}
	if n.cfg.Hub != nil {
		hub := n.cfg.Hub
		g.ap.onApplied = func(envs []projections.Envelope) {
			for _, e := range envs {
				hub.Notify(e.AggregateType, e.AggregateID)
			}
		}
	}
	return g
}

// startLocked runs g's applier. n.mu is held.
func (n *Node) startLocked(ctx context.Context, g *generation) {
	rctx, cancel := context.WithCancel(ctx)
	g.cancel, g.done = cancel, make(chan struct{})
	n.wg.Go(func() {
		defer close(g.done)
		g.ap.run(rctx)
	})
}

// Ready reports an error until every live model has applied the stream's
// last sequence as read when the node opened.
func (n *Node) Ready(context.Context) error {
	var behind []string
	for _, name := range n.cfg.Models {
		g := n.models[name].live.Load()
		if g.ap == nil || !g.ap.caught.Load() {
			behind = append(behind, name)
		}
	}
	if len(behind) > 0 {
		return fmt.Errorf("readnode: catching up with the stream (sequence %d): %v", n.target, behind)
	}
	return nil
}

// Rebuild builds a new generation of the named model from the whole stream
// beside the live one and makes it live once it has caught up; it returns
// the new generation's number.
func (n *Node) Rebuild(ctx context.Context, name string) (int, error) {
	mm := n.models[name]
	if mm == nil {
		return 0, fmt.Errorf("%w: %q", ErrNoSuchModel, name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runCtx == nil || n.stopped {
		return 0, lifecycle.ErrNotRunning
	}
	if mm.coordinating {
		return 0, lifecycle.ErrRebuildUnderWay
	}
	st, rev, err := n.rec.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	next, drop, err := st.Acquire(n.owner, time.Now(), leaseTTL)
	if err != nil {
		return 0, err
	}
	for _, g := range drop {
		if err := dropStore(n.cfg.Dir, name, g); err != nil {
			return 0, err
		}
	}
	if st, rev, err = n.put(ctx, name, next, rev); err != nil {
		return 0, err
	}
	s, err := openStore(n.cfg.Dir, name, st.Rebuild, true, n.cfg.SearchCache)
	if err != nil {
		return 0, err
	}
	if next, err = st.Ready(n.owner); err == nil {
		st, _, err = n.put(ctx, name, next, rev)
	}
	if err != nil {
		s.close()
		return 0, err
	}
	info, err := n.cfg.JS.Stream(ctx, n.cfg.Stream)
	if err != nil {
		s.close()
		return 0, err
	}
	g := n.attach(mm, &generation{n: st.Rebuild, st: s}, info.CachedInfo().State.LastSeq)
	mm.next, mm.coordinating = g, true
	n.startLocked(n.runCtx, g)
	n.wg.Go(func() { n.coordinate(n.runCtx, mm, g) })
	return g.n, nil
}

// coordinate promotes g once it has caught up with the live generation,
// then retires the one it replaced.
func (n *Node) coordinate(ctx context.Context, mm *model, g *generation) {
	defer func() {
		n.mu.Lock()
		mm.coordinating = false
		n.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return
	case <-g.ap.caughtUp:
	}
	for g.ap.applied.Load() < mm.live.Load().ap.applied.Load() {
		sleep(ctx, 20*time.Millisecond)
		if ctx.Err() != nil {
			return
		}
	}
	st, rev, err := n.rec.Get(ctx, mm.name)
	var next lifecycle.State
	if err == nil {
		next, err = st.Promote(n.owner, g.n)
	}
	if err == nil {
		st, rev, err = n.put(ctx, mm.name, next, rev)
	}
	if err != nil {
		n.cfg.Logger.Error("promote a rebuilt generation", "model", mm.name, "generation", g.n, "err", err)
		return
	}
	n.mu.Lock()
	old := mm.live.Swap(g)
	mm.next = nil
	n.mu.Unlock()
	n.cfg.Logger.Info("read model switched", "model", mm.name, "generation", g.n)
	old.cancel()
	<-old.done
	sleep(ctx, n.cfg.RetireGrace) // reads under way on the old generation
	old.st.close()
	if ctx.Err() != nil {
		return // the next start retires it
	}
	if err := dropStore(n.cfg.Dir, mm.name, old.n); err != nil {
		n.cfg.Logger.Error("drop a retired generation", "model", mm.name, "generation", old.n, "err", err)
		return
	}
	if next, err = st.Retired(n.owner); err == nil {
		_, _, err = n.put(ctx, mm.name, next, rev)
	}
	if err != nil {
		n.cfg.Logger.Error("record a retired generation", "model", mm.name, "err", err)
	}
}

// ModelStatus is one local model's state, for GET /v1/admin/projections.
type ModelStatus struct {
	Name       string `json:"name"`
	Generation string `json:"generation"`
	// Applied is the last stream sequence the model applied.
	Applied  uint64 `json:"applied"`
	CaughtUp bool   `json:"caught_up"`
	// Rebuild is the generation being built beside it, if any.
	Rebuild *ModelStatus `json:"rebuild,omitempty"`
}

// Status reports every local model.
func (n *Node) Status(context.Context) (any, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]ModelStatus, 0, len(n.models))
	for _, name := range n.cfg.Models {
		mm := n.models[name]
		s := genStatus(name, mm.live.Load())
		if mm.next != nil {
			r := genStatus(name, mm.next)
			s.Rebuild = &r
		}
		out = append(out, s)
	}
	return out, nil
}

func genStatus(name string, g *generation) ModelStatus {
	s := ModelStatus{Name: name, Generation: lifecycle.GenerationName(g.n)}
	if g.ap != nil {
		s.Applied, s.CaughtUp = g.ap.applied.Load(), g.ap.caught.Load()
	}
	return s
}

// Keeps reports whether the node keeps the named model itself.
func (n *Node) Keeps(name string) bool { return slices.Contains(n.cfg.Models, name) }

// Close releases every generation and the record. Call it after Run
// returned.
func (n *Node) Close() {
	for _, mm := range n.models {
		if g := mm.live.Load(); g != nil {
			g.st.close()
		}
		if mm.next != nil {
			mm.next.st.close()
		}
	}
	_ = n.rec.Close()
}
