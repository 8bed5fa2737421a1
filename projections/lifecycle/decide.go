package lifecycle

import "time"

// Progress is what one generation's consumers have done, per partition.
type Progress struct {
	// Delivered is, per partition, the highest stream sequence the
	// consumer delivered: nothing past it can have been applied.
	Delivered []uint64
	// AckFloor is, per partition, the stream sequence up to which every
	// event was applied and acknowledged.
	AckFloor []uint64
	// InFlight counts events delivered and not yet acknowledged.
	InFlight int
	// Pending counts events not yet delivered plus InFlight.
	Pending uint64
	// Missing counts partitions whose consumer does not exist.
	Missing int
}

// Facts are what the owner of a rebuild knows when it decides.
type Facts struct {
	Live, Next Progress
	// NextIntact: the new generation's store still holds what it applied
	// (its marker is there, for stores that can lose their data).
	NextIntact bool
	// Fenced: the live generation's consumers are paused, so what it has
	// applied no longer grows once InFlight is 0; FencedFor is since when.
	Fenced    bool
	FencedFor time.Duration
}

// Step is what the owner does next.
type Step int

const (
	// Wait: look again later.
	Wait Step = iota
	// Fence: pause the live generation's consumers.
	Fence
	// Promote: record the new generation as live.
	Promote
	// Unfence: resume the live generation's consumers; the new one fell
	// behind while they were paused.
	Unfence
	// Abandon: the new generation cannot be promoted; delete it.
	Abandon
)

func (s Step) String() string {
	return [...]string{"wait", "fence", "promote", "unfence", "abandon"}[s]
}

// FenceSlack is how many more events than the live generation the new one
// may have pending when the live one is paused for the promotion.
const FenceSlack = 256

// MaxFence bounds how long the live generation stays paused for a promotion.
const MaxFence = 5 * time.Second

// Decide is the promotion policy. The new generation is promoted only once
// it has applied, on every partition, every event the live one had been
// delivered while the live one was paused with nothing in flight: a reader
// moved to it never sees a state older than the one it saw before. The live
// generation is paused only once the new one is within FenceSlack events of
// it, so the pause lasts about one batch.
func Decide(f Facts) Step {
	switch {
	case !f.NextIntact:
		return Abandon
	case f.Next.Missing > 0:
		if f.Fenced {
			return Unfence
		}
		return Wait // being created by the workers
	case !f.Fenced:
		// Nearly there: under steady traffic the live generation is
		// always a few events ahead somewhere, so only a pause settles it.
		if f.Next.Pending <= f.Live.Pending+FenceSlack || covers(f.Next, f.Live.Delivered) {
			return Fence
		}
		return Wait
	case f.Live.InFlight == 0 && covers(f.Next, f.Live.Delivered):
		return Promote
	case f.FencedFor >= MaxFence:
		return Unfence
	default:
		return Wait
	}
}

// covers reports whether next has applied, on every partition, everything
// up to target. Its ack floor says so; so does its delivered sequence when
// nothing is in flight, since everything delivered is then acknowledged. The
// second matters at the stream's end: a consumer's delivered sequence moves
// past events its filter skips, its ack floor only with an ack, so a
// partition whose last events belong to other partitions would otherwise
// never look covered while nothing new arrives (seen after a NATS leader
// change, which leaves every consumer's delivered sequence at the stream's
// last).
func covers(next Progress, target []uint64) bool {
	for i, t := range target {
		if t == 0 {
			continue
		}
		if i >= len(next.AckFloor) || next.AckFloor[i] < t && (next.InFlight != 0 || next.Delivered[i] < t) {
			return false
		}
	}
	return true
}
