package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// DeadLetter is one dead-lettered event as an operator sees it.
type DeadLetter struct {
	DLQSeq     uint64    `json:"dlq_seq"`
	Projection string    `json:"projection"`
	StreamSeq  uint64    `json:"stream_seq"`
	Subject    string    `json:"subject"`
	EventType  string    `json:"event_type,omitempty"`
	EventID    string    `json:"event_id,omitempty"`
	Reason     string    `json:"reason"`
	Deliveries string    `json:"deliveries,omitempty"`
	At         time.Time `json:"dead_lettered_at"`
	Payload    string    `json:"payload"`
}

// ErrNoSuchDeadLetter is returned for a dead-letter sequence that is not in
// the stream (never was, or already replayed).
var ErrNoSuchDeadLetter = errors.New("no such dead letter")

// ErrNotThisProjection is returned by Replay for a dead letter of a
// projection the runtime does not run.
var ErrNotThisProjection = errors.New("the dead letter belongs to a projection this runtime does not run")

// DeadLetters lists up to limit dead letters, oldest first, of one projection
// ("" for all).
func (r *Runtime) DeadLetters(ctx context.Context, projection string, limit int) ([]DeadLetter, error) {
	stream, err := r.js.Stream(ctx, r.cfg.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream: %w", err)
	}
	filter := "dlq.>"
	if projection != "" {
		filter = "dlq." + projection + ".>"
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	want := min(uint64(limit), total)
	out := make([]DeadLetter, 0, want)
	for uint64(len(out)) < want {
		batch, err := cons.Fetch(int(want)-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, deadLetterOf(md.Sequence.Stream, m.Subject(), m.Headers(), m.Data(), md.Timestamp))
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	return out, nil
}

func deadLetterOf(seq uint64, subject string, h map[string][]string, data []byte, at time.Time) DeadLetter {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	streamSeq, _ := strconv.ParseUint(get(HeaderDLQStreamSeq), 10, 64)
	return DeadLetter{DLQSeq: seq, Projection: get(HeaderDLQProjection), StreamSeq: streamSeq,
		Subject: get(HeaderDLQSubject), EventType: get(jnats.HeaderEventType), EventID: get(HeaderDLQEventID),
		Reason: get(HeaderDLQReason), Deliveries: get(HeaderDLQDeliveries), At: at.UTC(), Payload: string(data)}
}

// Replay applies the dead letter at dlqSeq to its projection's store again,
// as the event it was (same stream sequence, so the store's guards keep
// anything newer), and removes it from the dead-letter stream when that
// succeeds. It fails, leaving the dead letter in place, when the event still
// cannot be decoded or applied.
func (r *Runtime) Replay(ctx context.Context, dlqSeq uint64) error {
	stream, err := r.js.Stream(ctx, r.cfg.DLQStream)
	if err != nil {
		return fmt.Errorf("dead-letter stream: %w", err)
	}
	raw, err := stream.GetMsg(ctx, dlqSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ErrNoSuchDeadLetter
	}
	if err != nil {
		return err
	}
	dl := deadLetterOf(raw.Sequence, raw.Subject, raw.Header, raw.Data, raw.Time)
	var proj *Projection
	for i := range r.projections {
		if r.projections[i].Name == dl.Projection {
			proj = &r.projections[i]
		}
	}
	if proj == nil {
		return fmt.Errorf("dead letter %d names projection %q: %w", dlqSeq, dl.Projection, ErrNotThisProjection)
	}
	orig := natsgo.Header{}
	for k, v := range raw.Header {
		orig[k] = v
	}
	orig.Set(jnats.HeaderMsgID, dl.EventID)
	ev, err := jnats.DecodeMsg(dl.Subject, orig, raw.Data)
	if err != nil {
		return fmt.Errorf("dead letter %d still does not decode: %w", dlqSeq, err)
	}
	env := Envelope{Seq: dl.StreamSeq, ID: ev.ID, AggregateType: ev.AggregateType, AggregateID: ev.AggregateID,
		AggregateVersion: ev.AggregateVersion, EventType: ev.EventType, SchemaVersion: ev.SchemaVersion,
		OccurredAt: ev.OccurredAt, TraceParent: ev.TraceParent, Payload: ev.Payload}
	if err := proj.Store.Apply(ctx, []Envelope{env}); err != nil {
		return fmt.Errorf("dead letter %d still does not apply: %w", dlqSeq, err)
	}
	if r.cfg.OnApplied != nil {
		r.cfg.OnApplied(proj.Name, []Envelope{env})
	}
	if err := stream.DeleteMsg(ctx, dlqSeq); err != nil {
		return fmt.Errorf("applied dead letter %d but could not remove it: %w", dlqSeq, err)
	}
	return nil
}
