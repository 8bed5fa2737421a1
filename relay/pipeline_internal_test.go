package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// fault is what the modelled stream does with one publish.
type fault int

const (
	deliver fault = iota // stored if it names the stream's last sequence, acknowledged
	refuse               // refused outright (no responders during a leader election)
	lostAck              // stored if it names the last sequence; the ack is lost (timeout)
	late                 // held in the client (a reconnect buffer), lands later; times out now
)

// modelStream is a JetStream stream with the expected-last-sequence check,
// publishing asynchronously with up to window publishes in flight across
// batches. The server handles each publish when it is sent, in order, as
// one server does; acknowledgements come back in order. Faults are drawn at
// random; a late publish is handed to the server at the start of a later
// PublishStream, after the relay looked at the stream, so it may land where
// the relay is about to send again.
type modelStream struct {
	t      *testing.T
	r      *Relay
	rng    *rand.Rand
	window int
	txs    []*committedTx

	mu     sync.Mutex
	stored []Event
	// limbo holds late publishes: the sequence each names and its event.
	limbo []limboPub
	// faults counts the faults drawn, by kind.
	faults map[fault]int
}

type limboPub struct {
	expect uint64
	event  Event
}

// safe is the end of the last transaction whose events, and all before
// them, are stored.
func (m *modelStream) safe() LSN {
	var safe LSN
	left := len(m.stored)
	for _, tx := range m.txs {
		if len(tx.events) > left {
			break
		}
		left -= len(tx.events)
		safe = tx.end
	}
	return safe
}

// land handles one publish at the server: stored only where it names.
func (m *modelStream) land(expect uint64, e Event) bool {
	if uint64(len(m.stored)) != expect {
		return false
	}
	m.stored = append(m.stored, e)
	return true
}

func (m *modelStream) Last(context.Context) (uint64, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.stored) == 0 {
		return 0, "", nil
	}
	return uint64(len(m.stored)), m.stored[len(m.stored)-1].Position(), nil
}

func (m *modelStream) LastPosition(_ context.Context, after uint64) (uint64, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if uint64(len(m.stored)) <= after {
		return 0, "", nil
	}
	return uint64(len(m.stored)), m.stored[len(m.stored)-1].Position(), nil
}

func (m *modelStream) EventIDs(_ context.Context, after, through uint64, fn func(uint64, string) error) error {
	m.mu.Lock()
	stored := slices.Clone(m.stored[after:min(through, uint64(len(m.stored)))])
	m.mu.Unlock()
	for i, e := range stored {
		if err := fn(after+uint64(i)+1, e.ID); err != nil {
			return err
		}
	}
	return nil
}

func (m *modelStream) PublishBatch(ctx context.Context, after uint64, events []Event) (int, error) {
	b := make(chan []Event, 1)
	b <- events
	close(b)
	return m.PublishStream(ctx, after, b, nil)
}

type outcome struct {
	err  error
	sent chan struct{} // closed when the server has handled it
}

func (m *modelStream) PublishStream(ctx context.Context, after uint64, batches <-chan []Event, acked func()) (int, error) {
	m.mu.Lock()
	for _, p := range m.limbo {
		m.land(p.expect, p.event)
	}
	m.limbo = nil
	m.mu.Unlock()

	slots := make(chan struct{}, m.window)
	queue := make(chan outcome, m.window)
	stop := make(chan struct{})
	go func() {
		defer close(queue)
		i := uint64(0)
		for {
			var batch []Event
			select {
			case <-stop:
				return
			case b, ok := <-batches:
				if !ok {
					return
				}
				batch = b
			}
			for _, e := range batch {
				select {
				case <-stop:
					return
				case slots <- struct{}{}:
				}
				m.mu.Lock()
				if c, safe := LSN(m.r.confirmed.Load()), m.safe(); c > safe {
					m.t.Errorf("confirmed %s before everything up to it was stored (safe %s)", c, safe)
				}
				f := deliver
				if x := m.rng.IntN(1000); x < 24 {
					f = fault(1 + x%3)
				}
				m.faults[f]++
				var err error
				switch f {
				case deliver:
					if !m.land(after+i, e) {
						err = fmt.Errorf("wrong last sequence: want %d, the stream is at %d", after+i, len(m.stored))
					}
				case refuse:
					err = errors.New("no responders")
				case lostAck:
					m.land(after+i, e)
					err = errors.New("ack timeout")
				case late:
					m.limbo = append(m.limbo, limboPub{expect: after + i, event: e})
					err = errors.New("ack timeout (disconnected)")
				}
				m.mu.Unlock()
				queue <- outcome{err: err}
				i++
			}
		}
	}()
	n := 0
	var firstErr error
	for o := range queue {
		<-slots
		// Acks arrive a little later than the sends, so several batches
		// are in flight at once.
		if rand.IntN(8) == 0 {
			time.Sleep(50 * time.Microsecond)
		}
		if o.err != nil {
			if firstErr == nil {
				firstErr = o.err
				close(stop)
			}
			continue
		}
		if firstErr == nil {
			n++
			if acked != nil {
				acked()
			}
		}
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return n, firstErr
}

// TestPipelinedPublishingUnderFaults runs the publisher goroutine against a
// modelled stream that refuses publishes, loses acknowledgements and lands
// held-back publishes late, with several batches in flight: the stream must
// end with every event once, in commit order, and the confirmed position
// must never pass what the stream stored.
func TestPipelinedPublishingUnderFaults(t *testing.T) {
	t.Parallel()
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			r := &Relay{cfg: Config{DatabaseURL: "postgres://x@127.0.0.1/x", BatchSize: 4, MaxPendingEvents: 64,
				Logger: slog.New(slog.DiscardHandler)}.withDefaults()}
			r.metrics, _ = newMetrics(nil)
			r.log = r.cfg.Logger
			rng := rand.New(rand.NewPCG(seed, 7))
			m := &modelStream{t: t, r: r, rng: rand.New(rand.NewPCG(seed, 11)), window: 10, faults: map[fault]int{}}
			r.pub = m

			var txs []*committedTx
			var want []int64
			seq := int64(0)
			for i := range 150 {
				tx := &committedTx{end: LSN(0x1000 * (i + 1))}
				for range rng.IntN(7) {
					seq++
					want = append(want, seq)
					tx.events = append(tx.events, Event{Seq: seq, ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", seq),
						CommitLSN: tx.end, TxIndex: len(tx.events)})
				}
				txs = append(txs, tx)
			}
			m.txs = txs
			q := newCommitQueue(r.cfg.MaxPendingEvents)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- r.publishCommitted(ctx, t.Context(), q, position{}) }()
		push:
			for _, tx := range txs {
				for !q.tryPush(tx) {
					select {
					case <-q.notFull:
					case err := <-done:
						done <- err
						break push
					}
				}
			}
			last := txs[len(txs)-1].end
			deadline := time.Now().Add(60 * time.Second)
			for LSN(r.confirmed.Load()) != last && time.Now().Before(deadline) && len(done) == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := LSN(r.confirmed.Load()); got != last {
				t.Fatalf("confirmed %s, want %s", got, last)
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			var got []int64
			for _, e := range m.stored {
				got = append(got, e.Seq)
			}
			if !slices.Equal(got, want) {
				t.Errorf("stored seqs %v, want %v", got, want)
			}
			if r.streamLast != uint64(len(want)) {
				t.Errorf("streamLast %d, want %d", r.streamLast, len(want))
			}
			if m.faults[refuse] == 0 || m.faults[lostAck] == 0 || m.faults[late] == 0 {
				t.Errorf("faults drawn %v: the model did not exercise every kind", m.faults)
			}
			t.Logf("%d events, faults %v", len(want), m.faults)
		})
	}
}
