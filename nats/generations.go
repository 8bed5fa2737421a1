package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// GenerationsBucket is the key-value bucket that records which generation of
// each read model is live: key = projection name, value = generation number.
const GenerationsBucket = "jetcqrs_read_models"

// ErrGenerationChanged is returned by Promote when another process recorded a
// generation since the caller read it.
var ErrGenerationChanged = errors.New("nats: live generation changed meanwhile")

// Generations reads and records the live generation of each read model. Every
// process opens the generation recorded here, and follows its changes.
type Generations struct {
	kv jetstream.KeyValue
}

// EnsureGenerations creates the bucket when missing (file storage, a short
// history for the record of past switches).
func EnsureGenerations(ctx context.Context, js jetstream.JetStream) (*Generations, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      GenerationsBucket,
		Description: "live generation of each jetcqrs read model",
		History:     8,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("nats: bucket %s: %w", GenerationsBucket, err)
	}
	return &Generations{kv: kv}, nil
}

// Live returns the live generation of model, 1 when none was ever recorded,
// and the revision to pass to Promote (0 when none was recorded).
func (g *Generations) Live(ctx context.Context, model string) (gen int, revision uint64, err error) {
	e, err := g.kv.Get(ctx, model)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 1, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("nats: live generation of %s: %w", model, err)
	}
	gen, err = parseGeneration(e.Value())
	if err != nil {
		return 0, 0, fmt.Errorf("nats: live generation of %s: %w", model, err)
	}
	return gen, e.Revision(), nil
}

// Promote records gen as model's live generation if the record is still at
// revision (as Live returned it); otherwise it returns ErrGenerationChanged.
func (g *Generations) Promote(ctx context.Context, model string, gen int, revision uint64) error {
	value := []byte(strconv.Itoa(gen))
	var err error
	if revision == 0 {
		_, err = g.kv.Create(ctx, model, value)
	} else {
		_, err = g.kv.Update(ctx, model, value, revision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
		return fmt.Errorf("%w: %s", ErrGenerationChanged, model)
	}
	if err != nil {
		return fmt.Errorf("nats: promote %s to generation %d: %w", model, gen, err)
	}
	return nil
}

// Watch calls fn for every generation recorded after Watch begins, until ctx
// ends. fn runs on one goroutine, in order.
func (g *Generations) Watch(ctx context.Context, fn func(model string, gen int)) error {
	w, err := g.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("nats: watch %s: %w", GenerationsBucket, err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				if gen, err := parseGeneration(e.Value()); err == nil {
					fn(e.Key(), gen)
				}
			}
		}
	}()
	return nil
}

func parseGeneration(b []byte) (int, error) {
	gen, err := strconv.Atoi(string(b))
	if err != nil || gen < 1 {
		return 0, fmt.Errorf("generation %q is not a positive integer", b)
	}
	return gen, nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
