package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// Spec is a read model's place in the stream.
type Spec struct {
	Name           string
	AggregateTypes []string
	EventTypes     []string // nil: every event of AggregateTypes
	CommitInterval time.Duration
}

// Model is one generation of one read model.
type Model interface {
	// Store applies the projection's batches (and serves reads).
	Store() projections.Applier
	// Drop deletes the generation's data; afterwards only Close is called.
	Drop(ctx context.Context) error
	// Close releases the generation in this process. Idempotent.
	Close()
}

// Marker is a Model whose store can lose its data while the stream's
// consumers keep their progress (Redis without persistence).
type Marker interface {
	// Mark records that the generation was created.
	Mark(ctx context.Context) error
	// Marked reports whether that record is still there.
	Marked(ctx context.Context) (bool, error)
}

// Exposer is a Model whose store has readers of its own (an Elasticsearch
// alias): Expose points them at this generation.
type Exposer interface {
	Expose(ctx context.Context) error
}

// Opener opens generation gen of the named model; fresh deletes what that
// generation already holds and marks it as created.
type Opener func(ctx context.Context, name string, gen int, fresh bool) (Model, error)

// Config configures a Manager. Zero durations take defaults.
type Config struct {
	Models []Spec
	Open   Opener
	Record Record
	JS     jetstream.JetStream
	// Runtime is the template of every projection runtime: Partitions,
	// Logger, Registry, OnApplied. Generation, Retired and StartDelay are
	// set per generation.
	Runtime projections.Config
	// Project: this process applies the models (a projector), not only
	// serves them.
	Project bool
	// Owner names this process in rebuild leases; unique in the deployment.
	Owner string
	// OnSwitch is called with each model's live generation: at Open, then
	// whenever another is promoted. Readers load the live store on every
	// read, so they move at once.
	OnSwitch func(name string, gen int, m Model)
	Logger   *slog.Logger
	// RetireGrace (default 10s): how long a replaced generation stays after
	// the switch, for reads under way on it and for processes elsewhere to
	// notice the switch.
	RetireGrace time.Duration
	// LeaseTTL (default 15s): how long a rebuild's owner may go silent
	// before another process takes the rebuild over.
	LeaseTTL time.Duration
	// Check (default 5s): how often lost data and abandoned leases are
	// looked for.
	Check time.Duration
}

func (c Config) withDefaults() Config {
	if c.RetireGrace == 0 {
		c.RetireGrace = 10 * time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.Check == 0 {
		c.Check = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Runtime.Stream == "" {
		c.Runtime.Stream = jnats.DefaultStreamName
	}
	if c.Runtime.Partitions == 0 {
		c.Runtime.Partitions = jnats.DefaultPartitions
	}
	if c.Runtime.Logger == nil {
		c.Runtime.Logger = c.Logger
	}
	return c
}

// Errors of Rebuild.
var (
	ErrNoSuchModel = errors.New("no such projection in this process")
	ErrNotRunning  = errors.New("lifecycle: the manager is not running")
)

// Manager owns this process's read models: their live generations, the
// runtimes that apply them, rebuilds, promotions and retirements. Every
// goroutine it starts is owned by Run.
type Manager struct {
	cfg            Config
	rebuildApplied *prometheus.CounterVec
	rebuilds       *prometheus.CounterVec

	mu      sync.Mutex
	models  map[string]*model
	order   []string
	runCtx  context.Context // Run's; nil before Run
	stopped bool
	wg      sync.WaitGroup
	errs    chan error
}

type model struct {
	spec Spec
	live *generation
	next *generation // being built, applied here
	rec  State       // as last seen
	// closing: generations this process still holds open after they left
	// live or next.
	closing      map[int]bool
	coordinating bool
}

type generation struct {
	n        int
	m        Model
	rt       *projections.Runtime // nil when this process does not apply it
	cancel   context.CancelFunc
	done     chan struct{}
	building atomic.Bool // a rebuild: counted in rebuildApplied
}

// New checks cfg. Open opens the models.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if cfg.Open == nil || cfg.Record == nil || cfg.JS == nil || cfg.OnSwitch == nil || cfg.Owner == "" {
		return nil, errors.New("lifecycle: Open, Record, JS, OnSwitch and Owner are required")
	}
	m := &Manager{cfg: cfg, models: map[string]*model{}, errs: make(chan error, 8)}
	for _, s := range cfg.Models {
		if m.models[s.Name] != nil {
			return nil, fmt.Errorf("lifecycle: model %q twice", s.Name)
		}
		m.models[s.Name] = &model{spec: s, closing: map[int]bool{}}
		m.order = append(m.order, s.Name)
	}
	m.rebuildApplied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jetcqrs_rebuild_events_applied_total",
		Help: "Events applied by this process to generations being rebuilt.",
	}, []string{"projection"})
	m.rebuilds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jetcqrs_rebuilds_started_total",
		Help: "Rebuilds this process started (took a new generation number for), by projection.",
	}, []string{"projection"})
	if cfg.Runtime.Registry != nil {
		for _, c := range []prometheus.Collector{m.rebuildApplied, m.rebuilds} {
			if err := cfg.Runtime.Registry.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// Open opens every model at its live generation and reports each to
// OnSwitch. In a projector, a model never marked whose consumers applied
// nothing is marked (a new deployment); one applied before but unmarked lost
// its data and is rebuilt once Run runs.
func (m *Manager) Open(ctx context.Context) error {
	for _, name := range m.order {
		mm := m.models[name]
		st, _, err := m.cfg.Record.Get(ctx, name)
		if err != nil {
			return err
		}
		md, err := m.cfg.Open(ctx, name, st.Live, false)
		if err != nil {
			return err
		}
		if mk, ok := md.(Marker); ok && m.cfg.Project {
			if err := m.markNew(ctx, name, st.Live, mk); err != nil {
				md.Close()
				return err
			}
		}
		if ex, ok := md.(Exposer); ok && st.Live == 1 {
			// A fresh cluster: later generations are exposed by the
			// rebuild that promotes them.
			if err := ex.Expose(ctx); err != nil {
				md.Close()
				return err
			}
		}
		m.mu.Lock()
		mm.live, mm.rec = &generation{n: st.Live, m: md}, st
		m.mu.Unlock()
		m.cfg.OnSwitch(name, st.Live, md)
	}
	return nil
}

func (m *Manager) markNew(ctx context.Context, name string, gen int, mk Marker) error {
	if ok, err := mk.Marked(ctx); err != nil || ok {
		return err
	}
	for part := 0; part < m.cfg.Runtime.Partitions; part++ {
		c, err := m.cfg.JS.Consumer(ctx, m.cfg.Runtime.Stream, projections.ConsumerName(name, GenerationName(gen), part))
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
	return mk.Mark(ctx)
}

// Close releases every generation still open. Call it after Run returned.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mm := range m.models {
		for _, g := range []*generation{mm.live, mm.next} {
			if g != nil {
				g.m.Close()
			}
		}
	}
}

// spawn runs f on a goroutine owned by Run; false once Run is stopping.
// m.mu is held.
func (m *Manager) spawnLocked(f func()) bool {
	if m.stopped {
		return false
	}
	m.wg.Go(f)
	return true
}

// Run follows the record (switching readers, and in a projector applying
// the live and the rebuilt generations and watching for lost data) until
// ctx ends or a runtime fails for good; then it waits for everything it
// started.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := make(chan Change, 16)
	watchErr := make(chan error, 1)
	m.mu.Lock()
	m.runCtx = ctx
	m.spawnLocked(func() {
		watchErr <- m.cfg.Record.Watch(ctx, func(c Change) {
			select {
			case changes <- c:
			case <-ctx.Done():
			}
		})
	})
	if m.cfg.Project {
		for _, name := range m.order {
			mm := m.models[name]
			if err := m.startLocked(ctx, mm, mm.live, false); err != nil {
				m.mu.Unlock()
				cancel()
				m.stop()
				return err
			}
		}
	}
	m.mu.Unlock()
	var err error
	ready := false
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-m.errs:
			break loop
		case err = <-watchErr:
			break loop
		case c := <-changes:
			if c.Ready {
				if !ready && m.cfg.Project {
					m.mu.Lock()
					m.spawnLocked(func() { m.supervise(ctx) })
					m.mu.Unlock()
				}
				ready = true
				continue
			}
			m.follow(ctx, c.Model, c.State)
		}
	}
	cancel()
	m.stop()
	return err
}

func (m *Manager) stop() {
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.wg.Wait()
}

// startLocked runs g's projection in a runtime of its own. m.mu is held.
func (m *Manager) startLocked(ctx context.Context, mm *model, g *generation, building bool) error {
	cfg := m.cfg.Runtime
	name, n := mm.spec.Name, g.n
	cfg.Generation = GenerationName(n)
	cfg.Retired = func(ctx context.Context) bool {
		st, _, err := m.cfg.Record.Get(ctx, name)
		return err == nil && !st.Applies(n)
	}
	g.building.Store(building)
	if building {
		onApplied := cfg.OnApplied
		counter := m.rebuildApplied.WithLabelValues(name)
		cfg.OnApplied = func(projection string, events []projections.Envelope) {
			if g.building.Load() {
				counter.Add(float64(len(events)))
			}
			if onApplied != nil {
				onApplied(projection, events)
			}
		}
		cfg.StartDelay = spread(m.cfg.Owner)
	}
	rt, err := projections.NewRuntime(m.cfg.JS, cfg, []projections.Projection{{Name: name,
		AggregateTypes: mm.spec.AggregateTypes, EventTypes: mm.spec.EventTypes,
		Store: g.m.Store(), CommitInterval: mm.spec.CommitInterval}})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	g.rt, g.cancel, g.done = rt, cancel, make(chan struct{})
	if !m.spawnLocked(func() {
		defer close(g.done)
		if err := rt.Run(rctx); err != nil && rctx.Err() == nil {
			select {
			case m.errs <- fmt.Errorf("projection %s %s: %w", name, GenerationName(n), err):
			default:
			}
		}
	}) {
		cancel()
		close(g.done)
	}
	return nil
}

// spread delays each partition's first pull by 0–300 ms, differently in
// each process, so that the processes starting a rebuild at once share its
// partitions.
func spread(owner string) func(int) time.Duration {
	return func(partition int) time.Duration {
		h := fnv.New32a()
		_, _ = h.Write([]byte(owner + "/" + strconv.Itoa(partition)))
		return time.Duration(h.Sum32()%4) * 100 * time.Millisecond
	}
}

// follow acts on a model's state as recorded: readers and runtimes move to
// a promoted generation, and a projector applies the generation being
// built, and stops one that is abandoned.
func (m *Manager) follow(ctx context.Context, name string, st State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mm := m.models[name]
	if mm == nil || mm.live == nil {
		return // not kept here
	}
	mm.rec = st
	if st.Live > mm.live.n {
		next := mm.next
		if next != nil && next.n == st.Live {
			mm.next = nil
			next.building.Store(false)
		} else {
			md, err := m.cfg.Open(ctx, name, st.Live, false)
			if err != nil {
				m.cfg.Logger.Error("open the promoted generation", "projection", name, "generation", st.Live, "err", err)
				return
			}
			next = &generation{n: st.Live, m: md}
			if m.cfg.Project {
				if err := m.startLocked(ctx, mm, next, false); err != nil {
					md.Close()
					m.cfg.Logger.Error("start the promoted generation", "projection", name, "generation", st.Live, "err", err)
					return
				}
			}
		}
		old := mm.live
		mm.live = next
		m.cfg.OnSwitch(name, next.n, next.m)
		m.cfg.Logger.Info("read model switched", "projection", name, "generation", next.n)
		m.releaseLocked(ctx, mm, old, m.cfg.RetireGrace)
	}
	if !m.cfg.Project {
		return
	}
	if mm.next != nil && !st.Applies(mm.next.n) {
		m.releaseLocked(ctx, mm, mm.next, 0)
		mm.next = nil
	}
	if mm.next == nil && st.Phase == PhaseBuilding && st.Rebuild > mm.live.n {
		md, err := m.cfg.Open(ctx, name, st.Rebuild, false)
		if err != nil {
			m.cfg.Logger.Error("open the generation being built", "projection", name, "generation", st.Rebuild, "err", err)
			return
		}
		g := &generation{n: st.Rebuild, m: md}
		if err := m.startLocked(ctx, mm, g, true); err != nil {
			md.Close()
			m.cfg.Logger.Error("apply the generation being built", "projection", name, "generation", st.Rebuild, "err", err)
			return
		}
		mm.next = g
	}
}

// releaseLocked stops g's runtime, and closes g after grace (at once when
// Run stops). m.mu is held.
func (m *Manager) releaseLocked(ctx context.Context, mm *model, g *generation, grace time.Duration) {
	mm.closing[g.n] = true
	if g.cancel != nil {
		g.cancel()
	}
	release := func() {
		if g.done != nil {
			<-g.done
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		g.m.Close()
		m.mu.Lock()
		delete(mm.closing, g.n)
		m.mu.Unlock()
	}
	if !m.spawnLocked(release) {
		g.m.Close()
		delete(mm.closing, g.n)
	}
}

// instance returns this process's open instance of generation gen of mm,
// nil when it has none.
func (m *Manager) instance(mm *model, gen int) Model {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range []*generation{mm.live, mm.next} {
		if g != nil && g.n == gen {
			return g.m
		}
	}
	return nil
}

// held reports whether this process still has generation gen of mm open.
func (m *Manager) held(mm *model, gen int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return mm.closing[gen] || mm.live != nil && mm.live.n == gen || mm.next != nil && mm.next.n == gen
}

// supervise rebuilds a live model whose store lost its data while its
// consumers kept their progress (Redis restarted without persistence, or
// flushed: acknowledged events are not delivered again), and takes over a
// rebuild whose owner went silent past its lease.
func (m *Manager) supervise(ctx context.Context) {
	t := time.NewTicker(m.cfg.Check)
	defer t.Stop()
	for {
		for _, name := range m.order {
			m.check(ctx, name)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) check(ctx context.Context, name string) {
	mm := m.models[name]
	m.mu.Lock()
	live, rec, busy := mm.live, mm.rec, mm.coordinating
	m.mu.Unlock()
	if busy {
		return
	}
	why := ""
	if rec.Phase != PhaseIdle && !rec.leased(time.Now()) {
		why = "its owner went silent"
	} else if mk, ok := live.m.(Marker); ok && rec.Phase == PhaseIdle {
		if marked, err := mk.Marked(ctx); err != nil || marked {
			return // unreachable now (the workers retry), or intact
		}
		why = "its store lost its data (restarted without persistence, or flushed)"
	} else {
		return
	}
	gen, err := m.Rebuild(ctx, name)
	switch {
	case errors.Is(err, ErrRebuildUnderWay) || ctx.Err() != nil:
	case err != nil:
		m.cfg.Logger.Error("rebuild", "projection", name, "why", why, "err", err)
	default:
		m.cfg.Logger.Warn("rebuilding a read model", "projection", name, "generation", gen, "why", why)
	}
}

// Rebuild takes the named model's rebuild lease and builds its next
// generation from the whole stream, beside the live one, and returns it;
// every projector process applies it, and this one promotes it once it has
// caught up, then retires the old one. It takes over a rebuild whose owner
// went silent. ErrRebuildUnderWay while another holds the lease.
func (m *Manager) Rebuild(ctx context.Context, name string) (int, error) {
	mm := m.models[name]
	if mm == nil || !m.cfg.Project {
		return 0, fmt.Errorf("%w: %q", ErrNoSuchModel, name)
	}
	m.mu.Lock()
	runCtx := m.runCtx
	switch {
	case runCtx == nil || m.stopped:
		m.mu.Unlock()
		return 0, ErrNotRunning
	case mm.coordinating:
		m.mu.Unlock()
		return 0, ErrRebuildUnderWay
	}
	mm.coordinating = true
	m.mu.Unlock()
	c := &coordinator{m: m, mm: mm, name: name}
	drop, err := c.acquire(ctx)
	if err == nil {
		m.mu.Lock()
		if !m.spawnLocked(func() { c.run(runCtx, drop) }) {
			err = ErrNotRunning
		}
		m.mu.Unlock()
	}
	if err != nil {
		m.mu.Lock()
		mm.coordinating = false
		m.mu.Unlock()
		return 0, err
	}
	switch c.st.Phase {
	case PhaseRetiring:
		return c.st.Live, nil
	case PhasePreparing:
		m.rebuilds.WithLabelValues(name).Inc()
	}
	return c.st.Rebuild, nil
}

// dropGeneration deletes generation gen of name (consumers and data), unless
// the record calls it live or being built. It waits until this process no
// longer holds gen open.
func (m *Manager) dropGeneration(ctx context.Context, name string, gen int) error {
	mm := m.models[name]
	for m.held(mm, gen) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	st, _, err := m.cfg.Record.Get(ctx, name)
	if err != nil {
		return err
	}
	if !st.MayDrop(gen) {
		return fmt.Errorf("lifecycle: generation %d of %s is in use (%+v); not dropped", gen, name, st)
	}
	if err := m.deleteConsumers(ctx, name, gen); err != nil {
		return err
	}
	md, err := m.cfg.Open(ctx, name, gen, false)
	if err != nil {
		return err
	}
	defer md.Close()
	return md.Drop(ctx)
}

func (m *Manager) deleteConsumers(ctx context.Context, name string, gen int) error {
	for part := 0; part < m.cfg.Runtime.Partitions; part++ {
		c := projections.ConsumerName(name, GenerationName(gen), part)
		err := m.cfg.JS.DeleteConsumer(ctx, m.cfg.Runtime.Stream, c)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("lifecycle: delete consumer %s: %w", c, err)
		}
	}
	return nil
}

// progress reads what generation gen of name has done, from its consumers.
// applied sums the events acknowledged.
func (m *Manager) progress(ctx context.Context, name string, gen int) (p Progress, applied uint64, err error) {
	n := m.cfg.Runtime.Partitions
	p.Delivered, p.AckFloor = make([]uint64, n), make([]uint64, n)
	for part := 0; part < n; part++ {
		c, err := m.cfg.JS.Consumer(ctx, m.cfg.Runtime.Stream, projections.ConsumerName(name, GenerationName(gen), part))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			p.Missing++
			continue
		}
		if err != nil {
			return p, 0, err
		}
		info := c.CachedInfo()
		p.Delivered[part], p.AckFloor[part] = info.Delivered.Stream, info.AckFloor.Stream
		p.InFlight += info.NumAckPending
		p.Pending += info.NumPending + uint64(info.NumAckPending)
		applied += info.AckFloor.Consumer
	}
	return p, applied, nil
}

// Status is a live projection's state for GET /v1/admin/projections, with
// the generation being built beside it, if any.
type Status struct {
	projections.Status
	Rebuild *RebuildStatus `json:"rebuild,omitempty"`
}

// RebuildStatus is a rebuild's state and progress.
type RebuildStatus struct {
	projections.Status
	// Done counts events applied, Total those to apply so far (the stream
	// grows while it runs).
	Done  uint64 `json:"done"`
	Total uint64 `json:"total"`
	// ETASeconds extrapolates the rate since it started; 0 when unknown.
	ETASeconds float64   `json:"eta_seconds"`
	Started    time.Time `json:"started"`
	Owner      string    `json:"owner"`
}

// Status reports each model this process applies.
func (m *Manager) Status(ctx context.Context) ([]Status, error) {
	type pair struct {
		live, next *generation
		rec        State
		name       string
	}
	m.mu.Lock()
	var runs []pair
	for _, name := range m.order {
		mm := m.models[name]
		if mm.live != nil && mm.live.rt != nil {
			runs = append(runs, pair{live: mm.live, next: mm.next, rec: mm.rec, name: name})
		}
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(runs))
	for _, r := range runs {
		st, err := r.live.rt.Status(ctx)
		if err != nil {
			return nil, err
		}
		s := Status{Status: st[0]}
		if r.next != nil && r.next.rt != nil {
			next, err := r.next.rt.Status(ctx)
			if err != nil {
				return nil, err
			}
			_, done, err := m.progress(ctx, r.name, r.next.n)
			if err != nil {
				return nil, err
			}
			rs := &RebuildStatus{Status: next[0], Done: done, Total: done + next[0].Pending,
				Started: r.rec.Started, Owner: r.rec.Owner}
			if el := time.Since(r.rec.Started).Seconds(); done > 0 && el > 0 && !r.rec.Started.IsZero() {
				rs.ETASeconds = float64(next[0].Pending) / (float64(done) / el)
			}
			s.Rebuild = rs
		}
		out = append(out, s)
	}
	return out, nil
}

// runtimes returns the runtimes of the live generations.
func (m *Manager) runtimes() []*projections.Runtime {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*projections.Runtime
	for _, name := range m.order {
		if g := m.models[name].live; g != nil && g.rt != nil {
			out = append(out, g.rt)
		}
	}
	return out
}

// DeadLetters lists dead letters of every projection (or one).
func (m *Manager) DeadLetters(ctx context.Context, projection string, limit int) ([]projections.DeadLetter, error) {
	rts := m.runtimes()
	if len(rts) == 0 {
		return nil, fmt.Errorf("dead letters: %w", ErrNotRunning)
	}
	return rts[0].DeadLetters(ctx, projection, limit)
}

// Replay applies a dead letter again through the runtime of its projection.
func (m *Manager) Replay(ctx context.Context, dlqSeq uint64) error {
	for _, rt := range m.runtimes() {
		err := rt.Replay(ctx, dlqSeq)
		if !errors.Is(err, projections.ErrNotThisProjection) {
			return err
		}
	}
	return fmt.Errorf("dead letter %d: %w", dlqSeq, projections.ErrNotThisProjection)
}

// Ready reports an error while any live generation's store is being waited
// out (an outage, see projections.Runtime.Ready).
func (m *Manager) Ready(ctx context.Context) error {
	var errs []error
	for _, rt := range m.runtimes() {
		errs = append(errs, rt.Ready(ctx))
	}
	return errors.Join(errs...)
}
