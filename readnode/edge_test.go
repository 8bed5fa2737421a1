package readnode

import (
	"testing"
	"time"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// TestLastContact: only a linked mirror heard from with nothing left to copy
// moves the moment the edge last had every event of the hub, and never
// backwards.
func TestLastContact(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	prev := now.Add(-10 * time.Second)
	for _, tc := range []struct {
		name   string
		linked bool
		st     jnats.MirrorState
		want   time.Time
	}{
		{"linked and current", true, jnats.MirrorState{Active: 500 * time.Millisecond}, now.Add(-500 * time.Millisecond)},
		{"link down: a restarted mirror's clock is not contact", false, jnats.MirrorState{Active: 0}, prev},
		{"catching up", true, jnats.MirrorState{Active: 0, Lag: 40}, prev},
		{"never heard from", true, jnats.MirrorState{Active: -1}, prev},
		{"older than known", true, jnats.MirrorState{Active: time.Minute}, prev},
	} {
		if got := lastContact(prev, now, tc.linked, tc.st); !got.Equal(tc.want) {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
