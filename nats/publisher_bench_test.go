package nats

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPublishAcrossBatches publishes 40,000 events in batches of
// 4,096 (the relay's BatchSize) into a fresh stream, the two ways the relay
// can: one PublishBatch per batch, each waiting for its acknowledgements
// before the next (stop-and-wait), and one PublishStream fed the same
// batches (pipelined across batches).
func BenchmarkPublishAcrossBatches(b *testing.B) {
	_, _, js := setup(b)
	p := newPublisher(b, js, PublisherConfig{AckTimeout: time.Minute})
	const total, batchSize = 40_000, 4096
	var events []Event
	fresh := func(b *testing.B) {
		b.Helper()
		s, err := js.Stream(context.Background(), "EVENTS")
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Purge(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	last := func(b *testing.B) uint64 {
		b.Helper()
		seq, _, err := p.Last(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		return seq
	}
	run := func(b *testing.B, publish func(after uint64) error) {
		var elapsed, cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			fresh(b)
			events = makeEvents(total) // new ids: the duplicate window remembers the last ones
			after := last(b)
			b.StartTimer()
			start, cpuStart := time.Now(), cpuTime()
			if err := publish(after); err != nil {
				b.Fatal(err)
			}
			elapsed += time.Since(start)
			cpu += cpuTime() - cpuStart
		}
		b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "events/s")
		// The process's CPU time (publisher and embedded server) per event
		// does not depend on what else the machine runs, as the rate does.
		b.ReportMetric(float64(cpu.Microseconds())/float64(total*b.N), "cpu-µs/event")
	}
	b.Run("stop-and-wait", func(b *testing.B) {
		run(b, func(after uint64) error {
			for i := 0; i < total; i += batchSize {
				n, err := p.PublishBatch(context.Background(), after, events[i:min(i+batchSize, total)])
				if err != nil {
					return err
				}
				after += uint64(n)
			}
			return nil
		})
	})
	b.Run("pipelined", func(b *testing.B) {
		run(b, func(after uint64) error {
			batches := make(chan []Event, 4)
			go func() {
				defer close(batches)
				for i := 0; i < total; i += batchSize {
					batches <- events[i:min(i+batchSize, total)]
				}
			}()
			_, err := p.PublishStream(context.Background(), after, batches, nil)
			return err
		})
	})
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
