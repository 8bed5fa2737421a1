package readnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// applier feeds one generation of one local model from the stream through
// an ordered consumer of its own: an ephemeral, unacknowledged consumer the
// server forgets when the node stops reading (deleted on a clean stop, after
// InactiveThreshold otherwise). It starts after the generation's checkpoint
// and applies in stream order, each batch in one transaction with the
// checkpoint, so whatever stops the process it resumes where the data ends.
type applier struct {
	name   string
	gen    int
	spec   lifecycle.Spec
	st     store
	js     jetstream.JetStream
	stream string
	// target: the generation has caught up once it applied this sequence,
	// or its consumer had nothing left to deliver.
	target    uint64
	interval  time.Duration // least time between commits (0: linger only)
	batchSize int
	inactive  time.Duration
	onApplied func([]projections.Envelope)
	log       *slog.Logger

	applied  atomic.Uint64
	caughtUp chan struct{}
	caught   atomic.Bool
}

func (a *applier) markCaughtUp() {
	if a.caught.CompareAndSwap(false, true) {
		close(a.caughtUp)
		a.log.Info("read model caught up", "applied", a.applied.Load())
	}
}

// filters are the subjects of the model's consumer, across every partition.
func filters(spec lifecycle.Spec) []string {
	if len(spec.EventTypes) == 0 {
		out := make([]string, len(spec.AggregateTypes))
		for i, t := range spec.AggregateTypes {
			out[i] = jnats.SubjectRoot + "." + t + ".*.*"
		}
		return out
	}
	out := make([]string, len(spec.EventTypes))
	for i, et := range spec.EventTypes {
		agg, _ := domain.AggregateOf(et)
		out[i] = jnats.SubjectRoot + "." + agg + ".*." + et
	}
	return out
}

// run applies until ctx ends; a failing consumer or store is retried.
func (a *applier) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := a.consume(ctx)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("reading the stream failed; retrying", "err", err)
		sleep(ctx, time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type delivery struct {
	msg jetstream.Msg
	err error
}

func (a *applier) consume(ctx context.Context) error {
	cp, err := a.st.checkpoint(ctx)
	if err != nil {
		return err
	}
	a.applied.Store(cp)
	if cp >= a.target {
		a.markCaughtUp()
	}
	cons, err := a.js.OrderedConsumer(ctx, a.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters(a.spec),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       cp + 1,
		InactiveThreshold: a.inactive,
		NamePrefix:        "readnode_" + a.name + "_" + lifecycle.GenerationName(a.gen) + "_" + randSuffix(),
	})
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(a.batchSize * 2))
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	defer func() {
		it.Stop()
		// Leave nothing behind: the ordered consumer's current server-side
		// consumer goes now rather than after its inactivity threshold.
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = a.js.DeleteConsumer(dctx, a.stream, info.Name)
			cancel()
		}
	}()
	if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 {
		a.markCaughtUp()
	}
	msgs := make(chan delivery, a.batchSize)
	// The reader goroutine ends with this call: Stop ends Next, and
	// readerCtx its last send.
	readerCtx, stopReader := context.WithCancel(ctx)
	defer stopReader()
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			select {
			case msgs <- delivery{m, err}:
			case <-readerCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var lastCommit time.Time
	batch := make([]jetstream.Msg, 0, a.batchSize)
	for {
		batch = batch[:0]
		var first delivery
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-msgs:
			if !ok {
				return errors.New("ordered consumer stopped")
			}
			first = d
		}
		if first.err != nil {
			return first.err
		}
		batch = append(batch, first.msg)
		// Gather: a short linger, or until the commit interval since the
		// last commit has passed (an idle model is written at once).
		wait := time.Millisecond
		if a.interval > 0 {
			wait = max(wait, time.Until(lastCommit.Add(a.interval)))
		}
		timer := time.NewTimer(wait)
	gather:
		for len(batch) < a.batchSize {
			select {
			case d, ok := <-msgs:
				if !ok || d.err != nil {
					break gather // the next round reports it
				}
				batch = append(batch, d.msg)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		if err := a.process(ctx, batch); err != nil {
			return err
		}
		lastCommit = time.Now()
	}
}

// process applies one batch, retrying a failing store until ctx ends.
func (a *applier) process(ctx context.Context, batch []jetstream.Msg) error {
	envs := make([]projections.Envelope, 0, len(batch))
	var last uint64
	var pending uint64
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("message metadata: %w", err)
		}
		last, pending = md.Sequence.Stream, md.NumPending
		ev, err := jnats.DecodeMsg(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			// The projectors dead-letter it; this node skips it.
			a.log.Warn("skipping a malformed event", "seq", md.Sequence.Stream, "err", err)
			continue
		}
		envs = append(envs, projections.Envelope{
			Seq: md.Sequence.Stream, ID: ev.ID, AggregateType: ev.AggregateType, AggregateID: ev.AggregateID,
			AggregateVersion: ev.AggregateVersion, EventType: ev.EventType, SchemaVersion: ev.SchemaVersion,
			OccurredAt: ev.OccurredAt, TraceParent: ev.TraceParent, Payload: ev.Payload,
		})
	}
	for attempt := 0; ; attempt++ {
		err := a.apply(ctx, envs, last)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("apply failed; retrying", "attempt", attempt+1, "err", err)
		sleep(ctx, min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
	}
	a.applied.Store(last)
	if a.onApplied != nil && len(envs) > 0 {
		a.onApplied(envs)
	}
	if pending == 0 || last >= a.target {
		a.markCaughtUp()
	}
	return nil
}

// apply applies envs and records last as the checkpoint. A poison event
// (one the store can never apply) is skipped, as the projectors
// dead-letter it; so is an event the store rejects on its own.
func (a *applier) apply(ctx context.Context, envs []projections.Envelope, last uint64) error {
	if len(envs) > 0 && envs[len(envs)-1].Seq >= last {
		last = 0 // the last event's transaction records it
	}
	for len(envs) > 0 {
		err := a.st.applyThrough(ctx, envs)
		var poison *projections.PoisonError
		switch {
		case err == nil:
			envs = nil
		case errors.As(err, &poison):
			i := 0
			for i < len(envs) && envs[i].Seq < poison.Seq {
				i++
			}
			if i > 0 {
				if err := a.st.applyThrough(ctx, envs[:i]); err != nil {
					return err
				}
			}
			a.log.Warn("skipping a poison event", "seq", poison.Seq, "reason", poison.Reason)
			if err := a.st.advance(ctx, poison.Seq); err != nil {
				return err
			}
			if i < len(envs) {
				i++
			}
			envs = envs[i:]
		case errors.Is(err, projections.ErrRejected) && len(envs) > 1:
			for _, e := range envs {
				if err := a.apply(ctx, []projections.Envelope{e}, e.Seq); err != nil {
					return err
				}
			}
			envs = nil
		case errors.Is(err, projections.ErrRejected):
			a.log.Warn("skipping an event the store rejects", "seq", envs[0].Seq, "err", err)
			if err := a.st.advance(ctx, envs[0].Seq); err != nil {
				return err
			}
			envs = nil
		default:
			return err
		}
	}
	if last == 0 {
		return nil
	}
	return a.st.advance(ctx, last)
}
