package opsstatus

import (
	"testing"

	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/relay"
)

// Evaluate names exactly the alert conditions that hold.
func TestEvaluate(t *testing.T) {
	t.Parallel()
	age := func(s float64) *float64 { return &s }
	leader := Relay{Status: &relay.Status{Mode: relay.ModeCDC, Slot: "s", Leader: true}, ConfirmedLSNAgeSeconds: age(0)}
	model := func(name string, lagMS int64, dls uint64, rb *lifecycle.RebuildStatus) lifecycle.Status {
		return lifecycle.Status{Status: projections.Status{Name: name, Generation: "g1", LagMS: lagMS, DeadLetters: dls}, Rebuild: rb}
	}
	rebuild := func(done, total uint64) *lifecycle.RebuildStatus {
		return &lifecycle.RebuildStatus{Status: projections.Status{Generation: "g2"}, Done: done, Total: total}
	}
	stuckSlot := Relay{Status: &relay.Status{Mode: relay.ModeCDC, Slot: "s", Leader: true, SlotLagBytes: 32 << 20},
		ConfirmedLSNAgeSeconds: age(120)}
	movingSlot := Relay{Status: &relay.Status{Mode: relay.ModeCDC, Slot: "s", Leader: true, SlotLagBytes: 32 << 20},
		ConfirmedLSNAgeSeconds: age(1)}
	for _, tc := range []struct {
		name   string
		r      Report
		before []lifecycle.Status
		want   []string
	}{
		{"healthy", Report{Relays: []Relay{leader}, Models: []lifecycle.Status{model("orders", 100, 0, nil)}}, nil, nil},
		{"no relay at all", Report{Relays: []Relay{{Error: "runs no relay"}}}, nil, []string{"JetcqrsRelayWithoutLeader"}},
		{"a standby only", Report{Relays: []Relay{{Status: &relay.Status{Mode: relay.ModeCDC}}}}, nil, []string{"JetcqrsRelayWithoutLeader"}},
		{"a standby and a leader", Report{Relays: []Relay{{Status: &relay.Status{Mode: relay.ModeCDC}}, leader}}, nil, nil},
		{"slot lag stuck", Report{Relays: []Relay{stuckSlot}}, nil, []string{"JetcqrsSlotLagGrowing"}},
		{"slot lag moving", Report{Relays: []Relay{movingSlot}}, nil, nil},
		{"lag", Report{Relays: []Relay{leader}, Models: []lifecycle.Status{model("sales", 501, 0, nil), model("orders", 500, 0, nil)}},
			nil, []string{"JetcqrsProjectionLagging"}},
		{"dead letters", Report{Relays: []Relay{leader}, Models: []lifecycle.Status{model("orders", 0, 2, nil)}}, nil,
			[]string{"JetcqrsDeadLetters"}},
		{"rebuild moving", Report{Relays: []Relay{leader}, Models: []lifecycle.Status{model("orders", 0, 0, rebuild(50, 100))}},
			[]lifecycle.Status{model("orders", 0, 0, rebuild(40, 100))}, nil},
		{"rebuild stalled", Report{Relays: []Relay{leader}, Models: []lifecycle.Status{model("orders", 0, 0, rebuild(40, 100))}},
			[]lifecycle.Status{model("orders", 0, 0, rebuild(40, 100))}, []string{"JetcqrsRebuildStalled"}},
		{"rebuild caught up", Report{Relays: []Relay{leader}, Models: []lifecycle.Status{model("orders", 0, 0, rebuild(100, 100))}},
			[]lifecycle.Status{model("orders", 0, 0, rebuild(100, 100))}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Evaluate(&tc.r, tc.before)
			if len(got) != len(tc.want) {
				t.Fatalf("alerts %+v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].Name != tc.want[i] {
					t.Fatalf("alerts %+v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestBarAndBytes(t *testing.T) {
	t.Parallel()
	if got := Bar(1, 4, 8); got != "[##......]  25%" {
		t.Errorf("Bar(1, 4, 8) = %q", got)
	}
	if got := Bar(0, 0, 4); got != "[####] 100%" {
		t.Errorf("Bar(0, 0, 4) = %q", got)
	}
	for n, want := range map[uint64]string{512: "512 B", 1536: "1.5 KiB", 32 << 20: "32.0 MiB"} {
		if got := IBytes(n); got != want {
			t.Errorf("IBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
