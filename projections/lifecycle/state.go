// Package lifecycle owns the read models of a jetcqrs process through their
// generations: which generation readers see, the rebuild of a new one beside
// it from the whole stream, its promotion, the retirement of the one it
// replaces, and the recovery of a model whose store lost its data. Every
// process of a deployment shares one Record per model; every change to it is
// a compare-and-set, so any number of processes can run side by side.
//
// The guarantees, and the parts that give them:
//   - One rebuild per model at a time: the rebuild lease is part of the
//     model's State; Acquire refuses while another owner holds it unexpired.
//   - A generation number is handed out once: State.Reserved only grows, and
//     is written by the same compare-and-set as the lease.
//   - Nothing drops the generation the record calls live: every drop reads
//     the record first and refuses a generation that MayDrop refuses; a
//     generation that a rebuild abandons is taken out of the record before
//     its data goes, and a number is never reserved twice.
//   - A promotion needs the lease (the same compare-and-set), and Decide
//     allows it only once the new generation has applied every event the
//     live one had been delivered, with the live one paused.
//   - No missed switch: Run watches the record from its current values, not
//     only its later changes.
package lifecycle

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Phase is where a model's rebuild stands.
type Phase string

const (
	// PhaseIdle: no rebuild; Owner is empty.
	PhaseIdle Phase = ""
	// PhasePreparing: the owner is creating generation Rebuild empty. Not
	// yet applied by anyone; an owner that vanishes here leaves it to be
	// dropped by the next one.
	PhasePreparing Phase = "preparing"
	// PhaseBuilding: generation Rebuild is applied from the whole stream
	// by every projector process; the owner promotes it when Decide says so.
	PhaseBuilding Phase = "building"
	// PhaseRetiring: generation Live was just promoted; the owner deletes
	// generation Retiring after the grace period.
	PhaseRetiring Phase = "retiring"
)

// State is one read model's record: its live generation and its rebuild, if
// any. The zero State of a model never recorded reads as generation 1.
type State struct {
	Live int `json:"live"`
	// Reserved is the highest generation number ever handed out.
	Reserved int   `json:"reserved,omitempty"`
	Phase    Phase `json:"phase,omitempty"`
	// Rebuild is the generation being built (PhasePreparing, PhaseBuilding).
	Rebuild int `json:"rebuild,omitempty"`
	// Retiring is the generation Live replaced (PhaseRetiring).
	Retiring int `json:"retiring,omitempty"`
	// Owner holds the rebuild lease until Expires; it renews it while it works.
	Owner   string    `json:"owner,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	// Started is when the rebuild began (its progress rate).
	Started time.Time `json:"started,omitzero"`
}

// Errors of the transitions.
var (
	// ErrRebuildUnderWay: another owner holds the model's lease.
	ErrRebuildUnderWay = errors.New("a rebuild of this read model is under way")
	// ErrLeaseLost: the caller no longer holds the lease (it expired and
	// was taken over), or the record is not in the phase the step needs.
	ErrLeaseLost = errors.New("lifecycle: rebuild lease lost")
)

func (s State) normal() State {
	if s.Live < 1 {
		s.Live = 1
	}
	return s
}

// leased reports whether someone holds the lease at now.
func (s State) leased(now time.Time) bool { return s.Owner != "" && now.Before(s.Expires) }

// Acquire takes the model's rebuild lease for owner until now+ttl. A free
// record reserves the next generation number and enters PhasePreparing;
// drop lists the generations the caller deletes before preparing (one whose
// preparation was cut short). An expired lease in PhaseBuilding or
// PhaseRetiring is taken over where it stands: the generation being built is
// durable, and every process applies it already.
func (s State) Acquire(owner string, now time.Time, ttl time.Duration) (next State, drop []int, err error) {
	s = s.normal()
	if s.leased(now) {
		return s, nil, fmt.Errorf("%w (generation %d, by %s)", ErrRebuildUnderWay, s.Rebuild, s.Owner)
	}
	next = s
	next.Owner, next.Expires = owner, now.Add(ttl)
	switch s.Phase {
	case PhaseBuilding, PhaseRetiring:
		return next, nil, nil
	case PhasePreparing:
		if s.Rebuild != 0 && s.Rebuild != s.Live {
			drop = append(drop, s.Rebuild)
		}
	}
	gen := max(s.Reserved, s.Live, s.Rebuild, s.Retiring) + 1
	next.Reserved, next.Rebuild, next.Retiring = gen, gen, 0
	next.Phase, next.Started = PhasePreparing, now
	return next, drop, nil
}

func (s State) owned(owner string, phases ...Phase) error {
	if s.Owner != owner {
		return fmt.Errorf("%w: held by %q", ErrLeaseLost, s.Owner)
	}
	for _, p := range phases {
		if s.Phase == p {
			return nil
		}
	}
	return fmt.Errorf("%w: phase %q", ErrLeaseLost, s.Phase)
}

// Renew extends owner's lease to now+ttl.
func (s State) Renew(owner string, now time.Time, ttl time.Duration) (State, error) {
	if err := s.owned(owner, PhasePreparing, PhaseBuilding, PhaseRetiring); err != nil {
		return s, err
	}
	s.Expires = now.Add(ttl)
	return s, nil
}

// Ready moves a prepared generation to PhaseBuilding: every projector
// process applies it from now on.
func (s State) Ready(owner string) (State, error) {
	if err := s.owned(owner, PhasePreparing); err != nil {
		return s, err
	}
	s.Phase = PhaseBuilding
	return s, nil
}

// Promote makes the generation being built live; the one it replaces is
// retiring.
func (s State) Promote(owner string, gen int) (State, error) {
	if err := s.owned(owner, PhaseBuilding); err != nil {
		return s, err
	}
	if s.Rebuild != gen {
		return s, fmt.Errorf("%w: building generation %d, not %d", ErrLeaseLost, s.Rebuild, gen)
	}
	s = s.normal()
	s.Retiring, s.Live, s.Rebuild, s.Phase = s.Live, gen, 0, PhaseRetiring
	return s, nil
}

// Retired ends the lease once the replaced generation is deleted.
func (s State) Retired(owner string) (State, error) {
	if err := s.owned(owner, PhaseRetiring); err != nil {
		return s, err
	}
	return s.idle(), nil
}

// Abandon ends a rebuild that will not be promoted. The caller deletes the
// generation after recording this, never before.
func (s State) Abandon(owner string) (State, error) {
	if err := s.owned(owner, PhasePreparing, PhaseBuilding); err != nil {
		return s, err
	}
	return s.idle(), nil
}

func (s State) idle() State {
	s = s.normal()
	s.Phase, s.Rebuild, s.Retiring, s.Owner, s.Expires, s.Started = PhaseIdle, 0, 0, "", time.Time{}, time.Time{}
	return s
}

// MayDrop reports whether generation gen may be deleted: it is neither live
// nor being built.
func (s State) MayDrop(gen int) bool {
	s = s.normal()
	return gen >= 1 && gen != s.Live && gen != s.Rebuild
}

// Applies reports whether projector processes apply generation gen: it is
// live, or being built.
func (s State) Applies(gen int) bool {
	s = s.normal()
	return gen == s.Live || (gen == s.Rebuild && s.Phase == PhaseBuilding)
}

// GenerationName names generation gen in key prefixes, directories, table
// and consumer names: "g1", "g2", …
func GenerationName(gen int) string { return "g" + strconv.Itoa(gen) }
