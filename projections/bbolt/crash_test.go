package boltstore_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	boltstore "github.com/jetcqrs/jetcqrs/projections/bbolt"
)

// childEnv, when set, makes the test binary a child process of a test
// instead of running the tests: "apply <dir>" applies the crash stream to the
// three models in dir, resuming from their checkpoints; "open <path>" opens
// a sales file.
const childEnv = "BOLTSTORE_TEST_CHILD"

func TestMain(m *testing.M) {
	if args := os.Getenv(childEnv); args != "" {
		if err := runChild(strings.Fields(args)); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, " "))
	return cmd
}

const (
	crashPartitions = 4
	crashBatch      = 8
)

func runChild(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "open":
		s, err := boltstore.OpenSales(args[1])
		if err != nil {
			return err
		}
		return s.Close()
	case len(args) == 2 && args[0] == "apply":
		return applyCrashStream(args[1])
	default:
		return fmt.Errorf("unknown child command %q", args)
	}
}

// applyCrashStream applies the crash stream to the models in dir, each
// partition from its checkpoint on, one batch per partition and model in
// turn, and prints a line after each round.
func applyCrashStream(dir string) error {
	ctx := context.Background()
	models, err := openModels(dir)
	if err != nil {
		return err
	}
	parts := partitionStream(shopStream(nil, crashOrders))
	for {
		progressed := false
		for _, name := range modelNames {
			s := models[name]
			for p, events := range parts {
				cp, err := s.Checkpoint(ctx, p)
				if err != nil {
					return err
				}
				rest := after(events, cp)
				if len(rest) == 0 {
					continue
				}
				if err := s.ApplyPartition(ctx, p, rest[:min(crashBatch, len(rest))]); err != nil {
					return err
				}
				progressed = true
			}
		}
		if !progressed {
			fmt.Println("done")
			return nil
		}
		fmt.Println("round")
	}
}

const crashOrders = 1500

var modelNames = []string{"orders", "inventory", "sales"}

func openModels(dir string) (map[string]model, error) {
	orders, err := boltstore.OpenOrders(filepath.Join(dir, "orders.db"))
	if err != nil {
		return nil, err
	}
	stock, err := boltstore.OpenInventory(filepath.Join(dir, "inventory.db"))
	if err != nil {
		return nil, err
	}
	sales, err := boltstore.OpenSales(filepath.Join(dir, "sales.db"))
	if err != nil {
		return nil, err
	}
	return map[string]model{"orders": orders, "inventory": stock, "sales": sales}, nil
}

// TestKilledWhileApplyingResumesFromItsCheckpoint kills a process applying
// the stream to the three models (SIGKILL, at a different point each of six rounds),
// and checks, after each kill, that each model holds exactly the events of
// each partition up to its checkpoint: byte for byte what a store that applied
// just those holds. The next round resumes from the checkpoints. At the end
// the rest of the stream, replayed from the checkpoints, leaves each model as
// a store that applied the whole stream once.
func TestKilledWhileApplyingResumesFromItsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	events := shopStream(t, crashOrders)
	parts := partitionStream(events)
	for round, rounds := range []int{2, 7, 13, 20, 28, 37} {
		cmd := childCommand(t, "apply", dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		seen, finished := 0, false
		for seen < rounds && lines.Scan() {
			if lines.Text() == "done" {
				finished = true
				break
			}
			seen++
		}
		// A moment later, so that the kill lands anywhere in a round: in a
		// read, a write transaction, or its fsync.
		time.Sleep(time.Duration(rand.Int64N(int64(20 * time.Millisecond))))
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for lines.Scan() {
		}
		err = cmd.Wait()
		if finished {
			t.Fatalf("round %d: the child applied the whole stream before the kill; make the stream longer", round)
		}
		if status, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !status.Signaled() || status.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL; stderr: %s", round, err, stderr.String())
		}

		models, err := openModels(dir)
		if err != nil {
			t.Fatalf("round %d: reopen after the kill: %v", round, err)
		}
		for _, name := range modelNames {
			s := models[name]
			var prefix []projections.Envelope
			var cps []uint64
			for p, pe := range parts {
				cp, err := s.Checkpoint(t.Context(), p)
				if err != nil {
					t.Fatal(err)
				}
				cps = append(cps, cp)
				prefix = append(prefix, pe[:len(pe)-len(after(pe, cp))]...)
			}
			if len(prefix) == 0 {
				t.Errorf("round %d: %s: no checkpoint after %d rounds", round, name, rounds)
			}
			if got, want := dump(t, s), reference(t, name, prefix); got != want {
				t.Errorf("round %d: %s at checkpoints %v does not hold exactly the events up to them", round, name, cps)
			}
		}
		closeModels(t, models)
	}

	models, err := openModels(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeModels(t, models)
	for _, name := range modelNames {
		s := models[name]
		for p, pe := range parts {
			cp, err := s.Checkpoint(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range batches(after(pe, cp), 64) {
				if err := s.ApplyPartition(t.Context(), p, b); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got, want := dump(t, s), reference(t, name, events); got != want {
			t.Errorf("%s, resumed from its checkpoints to the end, differs from a store that applied the stream once", name)
		}
	}
}

// reference is the dump of a fresh model that applied events.
func reference(t *testing.T, name string, events []projections.Envelope) string {
	t.Helper()
	s := openAll(t, t.TempDir())[name]
	for _, b := range batches(events, 256) {
		applyOK(t, s, b)
	}
	return dump(t, s)
}

func closeModels(t *testing.T, models map[string]model) {
	t.Helper()
	for name, s := range models {
		if err := s.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	}
}

// after is the events of a partition past seq.
func after(events []projections.Envelope, seq uint64) []projections.Envelope {
	for i, e := range events {
		if e.Seq > seq {
			return events[i:]
		}
	}
	return nil
}

// partitionStream splits events as the stream's subjects do: by a hash of
// the aggregate id (a product and its stock share the SKU).
func partitionStream(events []projections.Envelope) [][]projections.Envelope {
	parts := make([][]projections.Envelope, crashPartitions)
	for _, e := range events {
		h := fnv.New32a()
		h.Write([]byte(e.AggregateID))
		p := int(h.Sum32() % crashPartitions)
		parts[p] = append(parts[p], e)
	}
	return parts
}

// shopStream is a shop's events in stream order, sequences from 1: ten
// products created and stocked, then orders placed over them, each reserving
// its stock, paid and shipped or cancelled and released as the next orders
// come in. t is nil in a child process.
func shopStream(t *testing.T, orders int) []projections.Envelope {
	var out []projections.Envelope
	versions := map[string]int64{}
	emit := func(aggType, id, typ string, payload any) {
		body := mustJSON(t, payload)
		versions[aggType+"/"+id]++
		out = append(out, projections.Envelope{Seq: uint64(len(out) + 1), ID: fmt.Sprintf("evt-%d", len(out)+1),
			AggregateType: aggType, AggregateID: id, AggregateVersion: versions[aggType+"/"+id], EventType: typ,
			SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: crashT0.Add(time.Duration(len(out)) * time.Second), Payload: body})
	}
	const skus = 10
	stock := make([]domain.InventoryLevels, skus)
	lines := make([]domain.OrderLine, skus)
	for i := range skus {
		sku := fmt.Sprintf("SKU-%02d", i)
		lines[i] = domain.OrderLine{SKU: sku, Name: "Product " + sku, Category: fmt.Sprintf("cat-%d", i%3), PriceCents: int64(100 + 37*i)}
		emit(domain.AggregateProduct, sku, domain.EventProductCreated, domain.ProductCreated{ProductSnapshot: domain.ProductSnapshot{
			SKU: sku, Name: lines[i].Name, Category: lines[i].Category, PriceCents: lines[i].PriceCents, Version: 1,
			CreatedAt: crashT0, UpdatedAt: crashT0}})
		stock[i] = domain.InventoryLevels{SKU: sku, OnHand: 1_000_000, Available: 1_000_000, Version: 1}
		emit(domain.AggregateInventory, sku, domain.EventInventoryAdjusted, domain.InventoryAdjusted{InventoryLevels: stock[i], Delta: 1_000_000})
	}
	move := func(i int, typ, orderID string, qty, onHand, reserved int64) {
		s := &stock[i]
		s.OnHand, s.Reserved, s.Version = s.OnHand+onHand, s.Reserved+reserved, s.Version+1
		s.Available = s.OnHand - s.Reserved
		var payload any
		switch typ {
		case domain.EventInventoryReserved:
			payload = domain.InventoryReserved{InventoryLevels: *s, OrderID: orderID, Quantity: qty}
		case domain.EventInventoryReleased:
			payload = domain.InventoryReleased{InventoryLevels: *s, OrderID: orderID, Quantity: qty, Reason: domain.InventoryReasonCanceled}
		default:
			payload = domain.InventoryShipped{InventoryLevels: *s, OrderID: orderID, Quantity: qty}
		}
		emit(domain.AggregateInventory, s.SKU, typ, payload)
	}
	var open []domain.OrderSnapshot
	for n := range orders {
		at := crashT0.Add(time.Duration(n) * 7 * time.Minute)
		o := orderSnap(fmt.Sprintf("order-%05d", n), fmt.Sprintf("user-%d", n%40), domain.StatusPlaced, 1, at,
			withQuantity(lines[n%skus], int64(1+n%3)), withQuantity(lines[(n*7+3)%skus], 1))
		emit(domain.AggregateOrder, o.OrderID, domain.EventOrderPlaced, domain.OrderPlaced{OrderSnapshot: o})
		for _, l := range o.Items {
			move(skuIndex(l.SKU), domain.EventInventoryReserved, o.OrderID, l.Quantity, 0, l.Quantity)
		}
		open = append(open, o)
		if len(open) < 3 {
			continue
		}
		o, open = open[0], open[1:]
		if n%5 == 0 {
			o = orderSnap(o.OrderID, o.UserID, domain.StatusCancelled, 2, o.PlacedAt, o.Items...)
			emit(domain.AggregateOrder, o.OrderID, domain.EventOrderCancelled, domain.OrderCancelled{OrderSnapshot: o,
				Reason: "customer request", PreviousStatus: domain.StatusPlaced})
			for _, l := range o.Items {
				move(skuIndex(l.SKU), domain.EventInventoryReleased, o.OrderID, l.Quantity, 0, -l.Quantity)
			}
			continue
		}
		o = orderSnap(o.OrderID, o.UserID, domain.StatusPaid, 2, o.PlacedAt, o.Items...)
		emit(domain.AggregateOrder, o.OrderID, domain.EventOrderPaid, domain.OrderPaid{OrderSnapshot: o})
		o = orderSnap(o.OrderID, o.UserID, domain.StatusShipped, 3, o.PlacedAt, o.Items...)
		emit(domain.AggregateOrder, o.OrderID, domain.EventOrderShipped, domain.OrderShipped{OrderSnapshot: o})
		for _, l := range o.Items {
			move(skuIndex(l.SKU), domain.EventInventoryShipped, o.OrderID, l.Quantity, -l.Quantity, -l.Quantity)
		}
	}
	return out
}

var crashT0 = time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)

func withQuantity(l domain.OrderLine, q int64) domain.OrderLine {
	l.Quantity = q
	return l
}

func skuIndex(sku string) int {
	var i int
	fmt.Sscanf(sku, "SKU-%02d", &i)
	return i
}

func mustJSON(t *testing.T, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		if t != nil {
			t.Fatal(err)
		}
		panic(err) // the generator's values always encode
	}
	return body
}

// Partitions apply concurrently, as a process's consumers do: each one's
// checkpoint ends at its last event, and each model ends as a store that
// applied the stream in order.
func TestPartitionsApplyConcurrently(t *testing.T) {
	events := shopStream(t, 150)
	parts := partitionStream(events)
	for name, s := range openAll(t, t.TempDir()) {
		t.Run(name, func(t *testing.T) {
			errs := make(chan error, len(parts))
			for p, pe := range parts {
				go func() {
					for _, b := range batches(pe, 5) {
						if err := s.ApplyPartition(t.Context(), p, b); err != nil {
							errs <- fmt.Errorf("partition %d: %w", p, err)
							return
						}
					}
					errs <- nil
				}()
			}
			for range parts {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			for p, pe := range parts {
				if cp, err := s.Checkpoint(t.Context(), p); err != nil || cp != pe[len(pe)-1].Seq {
					t.Errorf("Checkpoint(%d) = %d, %v; want %d", p, cp, err, pe[len(pe)-1].Seq)
				}
			}
			if got, want := dump(t, s), reference(t, name, events); got != want {
				t.Errorf("%s applied by concurrent partitions differs from a store that applied the stream in order", name)
			}
		})
	}
}
