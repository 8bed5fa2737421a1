package nats_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
	jnats "github.com/jetcqrs/jetcqrs/nats"
)

func TestGenerationsPromoteAndWatch(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	g, err := jnats.EnsureGenerations(t.Context(), js.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jnats.EnsureGenerations(t.Context(), js.JS); err != nil {
		t.Fatalf("second EnsureGenerations: %v", err)
	}
	gen, rev, err := g.Live(t.Context(), "orders")
	if err != nil || gen != 1 || rev != 0 {
		t.Fatalf("Live before any record = %d, %d, %v; want 1, 0", gen, rev, err)
	}
	seen := make(chan [2]any, 4)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := g.Watch(ctx, func(model string, gen int) { seen <- [2]any{model, gen} }); err != nil {
		t.Fatal(err)
	}
	if err := g.Promote(t.Context(), "orders", 2, rev); err != nil {
		t.Fatal(err)
	}
	// A promotion from a stale read loses, whether the record was absent
	// or at an older revision then.
	if err := g.Promote(t.Context(), "orders", 5, rev); !errors.Is(err, jnats.ErrGenerationChanged) {
		t.Fatalf("Promote from a stale absent record: %v, want ErrGenerationChanged", err)
	}
	gen, rev2, err := g.Live(t.Context(), "orders")
	if err != nil || gen != 2 || rev2 == 0 {
		t.Fatalf("Live after promotion = %d, %d, %v; want 2", gen, rev2, err)
	}
	if err := g.Promote(t.Context(), "orders", 3, rev2); err != nil {
		t.Fatal(err)
	}
	if err := g.Promote(t.Context(), "orders", 4, rev2); !errors.Is(err, jnats.ErrGenerationChanged) {
		t.Fatalf("Promote from a stale revision: %v, want ErrGenerationChanged", err)
	}
	for _, want := range [][2]any{{"orders", 2}, {"orders", 3}} {
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("watched %v, want %v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no watch update for %v", want)
		}
	}
}
