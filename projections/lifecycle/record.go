package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Record keeps each read model's State where every process of the
// deployment reads it. Today it is a NATS key-value bucket (KVRecord).
type Record interface {
	// Get returns model's state and its revision, 0 when it was never
	// recorded (then the state reads as generation 1 live, nothing else).
	Get(ctx context.Context, model string) (State, uint64, error)
	// Put records s if model's record is still at revision (0: absent) and
	// returns the new revision; ErrChanged if another write came first.
	Put(ctx context.Context, model string, s State, revision uint64) (uint64, error)
	// Watch calls fn with every model's current state, then once with
	// Ready set, then with every later change, in order, on the calling
	// goroutine, until ctx ends (nil) or the watch fails.
	Watch(ctx context.Context, fn func(Change)) error
}

// Change is one state seen by Watch.
type Change struct {
	Model string
	State State
	// Ready marks the end of the current states.
	Ready bool
}

// ErrChanged is returned by Put when the record moved since it was read.
var ErrChanged = errors.New("lifecycle: record changed meanwhile")

// Bucket is the key-value bucket of KVRecord: key = model name, value = its
// State as JSON (a bare generation number, as older releases wrote it, reads
// as that generation live).
const Bucket = "jetcqrs_read_models"

// KVRecord is the Record kept in a NATS JetStream key-value bucket.
type KVRecord struct {
	kv jetstream.KeyValue
}

var _ Record = (*KVRecord)(nil)

// EnsureKVRecord creates the bucket when missing (file storage, a short
// history of past states, replicas copies: 3 on a cluster, so the record
// outlives a server). An existing bucket is used as it is; raising its
// replicas is its stream's (KV_jetcqrs_read_models) business, as for any
// stream.
func EnsureKVRecord(ctx context.Context, js jetstream.JetStream, replicas int) (*KVRecord, error) {
	if kv, err := js.KeyValue(ctx, Bucket); err == nil {
		return answering(ctx, kv)
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("lifecycle: bucket %s: %w", Bucket, err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "generations and rebuild leases of jetcqrs read models",
		History:     8,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another process created it meanwhile.
		kv, err = js.KeyValue(ctx, Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("lifecycle: bucket %s: %w", Bucket, err)
	}
	return answering(ctx, kv)
}

// answering returns the record once its bucket answers reads: a replicated
// bucket just created, or one whose servers just restarted, has no
// responders until its replicas are up, and the first Get of a process
// start must not fail for that.
func answering(ctx context.Context, kv jetstream.KeyValue) (*KVRecord, error) {
	for {
		_, err := kv.Get(ctx, "probe")
		if err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
			return &KVRecord{kv: kv}, nil
		}
		if !errors.Is(err, natsgo.ErrNoResponders) {
			return nil, fmt.Errorf("lifecycle: bucket %s: %w", Bucket, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lifecycle: bucket %s does not answer: %w", Bucket, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Get implements Record.
func (r *KVRecord) Get(ctx context.Context, model string) (State, uint64, error) {
	e, err := r.kv.Get(ctx, model)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{Live: 1}, 0, nil
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("lifecycle: record of %s: %w", model, err)
	}
	s, err := decodeState(e.Value())
	if err != nil {
		return State{}, 0, fmt.Errorf("lifecycle: record of %s: %w", model, err)
	}
	return s, e.Revision(), nil
}

// Put implements Record.
func (r *KVRecord) Put(ctx context.Context, model string, s State, revision uint64) (uint64, error) {
	value, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	var rev uint64
	if revision == 0 {
		rev, err = r.kv.Create(ctx, model, value)
	} else {
		rev, err = r.kv.Update(ctx, model, value, revision)
	}
	if casConflict(err) {
		return 0, fmt.Errorf("%w: %s", ErrChanged, model)
	}
	if err != nil {
		return 0, fmt.Errorf("lifecycle: record %s: %w", model, err)
	}
	return rev, nil
}

// Watch implements Record.
func (r *KVRecord) Watch(ctx context.Context, fn func(Change)) error {
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("lifecycle: watch %s: %w", Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("lifecycle: watch %s ended", Bucket)
			case e == nil:
				fn(Change{Ready: true})
			case e.Operation() == jetstream.KeyValuePut:
				if s, err := decodeState(e.Value()); err == nil {
					fn(Change{Model: e.Key(), State: s})
				}
			}
		}
	}
}

// casConflict reports a compare-and-set that lost: the key exists (Create)
// or moved past the revision (Update). A replicated bucket reports the
// latter with its own code (10164, not 10071).
func casConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func decodeState(b []byte) (State, error) {
	if gen, err := strconv.Atoi(string(b)); err == nil {
		if gen < 1 {
			return State{}, fmt.Errorf("generation %d is not positive", gen)
		}
		return State{Live: gen, Reserved: gen}, nil
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("state %q: %w", b, err)
	}
	if s.Live < 1 {
		return State{}, fmt.Errorf("state %q: live generation is not positive", b)
	}
	return s, nil
}
