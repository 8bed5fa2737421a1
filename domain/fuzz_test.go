package domain_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

// fuzzSKUs are the SKUs orders pick from; "zz-unknown" is not in the catalog.
var fuzzSKUs = []string{"CHAIR_3", "apple-1", "banana.2", "zz-unknown"}

var fuzzActors = []domain.Actor{admin, alice, bob, {Role: domain.RoleCustomer}}

// byteStream hands out the fuzz input one byte at a time, then zeros.
type byteStream struct {
	data []byte
	pos  int
}

func (b *byteStream) done() bool { return b.pos >= len(b.data) }

func (b *byteStream) next() byte {
	if b.done() {
		return 0
	}
	c := b.data[b.pos]
	b.pos++
	return c
}

// maxFuzzInput bounds the decoded bytes of one input (some fifty commands) so
// that every execution, and the minimization of an interesting input, which is
// quadratic in its length, stays fast.
const maxFuzzInput = 256

type aggregateKey struct{ typ, id string }

type fuzzOrder struct {
	order *domain.Order
	lines []domain.OrderLine // fixed at placement
}

// fuzzWorld is the write store of one fuzz run. Every command runs on clones
// of what it touches, and the clones replace the world only when the command
// succeeded, as a transaction would.
type fuzzWorld struct {
	catalog  map[string]domain.CatalogEntry
	stock    map[string]*domain.Inventory
	orders   []fuzzOrder
	versions map[aggregateKey]int64 // version of the last event per aggregate
}

func (w *fuzzWorld) cloneStock() map[string]*domain.Inventory {
	stock := make(map[string]*domain.Inventory, len(w.stock))
	for sku, inv := range w.stock {
		stock[sku] = domain.RehydrateInventory(inv.Levels())
	}
	return stock
}

// fuzzCommand is one decoded command, kept to describe a failing step.
type fuzzCommand struct {
	op       string
	actor    domain.Actor
	sku      string
	delta    int64
	owner    string
	items    []domain.OrderLineRequest
	orderID  string
	status   domain.OrderStatus
	rejected error
}

func (c fuzzCommand) String() string {
	var s string
	switch c.op {
	case "adjust":
		s = fmt.Sprintf("adjust %s by %d", c.sku, c.delta)
	case "place":
		s = fmt.Sprintf("place %s for %s: %v", c.orderID, c.owner, c.items)
	default:
		s = fmt.Sprintf("%s %s (%s)", c.op, c.orderID, c.status)
	}
	s += fmt.Sprintf(" as %q", c.actor.Subject)
	if c.rejected != nil {
		s += " → rejected: " + c.rejected.Error()
	}
	return s
}

// step decodes and applies one command. It returns the command, the events
// of its success, and an error only when the domain broke a promise; a
// rejected command is recorded in the returned command.
func (w *fuzzWorld) step(in *byteStream, n int, now time.Time) (fuzzCommand, []domain.Event, error) {
	stock := w.cloneStock()
	op := in.next() % 6
	cmd := fuzzCommand{actor: fuzzActors[int(in.next())%len(fuzzActors)]}
	var (
		evs    []domain.Event
		err    error
		commit func()
	)
	switch op {
	case 0:
		cmd.op = "adjust"
		cmd.sku = fuzzSKUs[int(in.next())%3]
		cmd.delta = int64(int8(in.next()))
		if in.next()%16 == 0 {
			cmd.delta *= 10_000_000 // 100 reaches MaxAdjustment exactly
		}
		var ev domain.Event
		if ev, err = stock[cmd.sku].Adjust(cmd.actor, cmd.delta, "fuzz", now); err == nil {
			evs = []domain.Event{ev}
		}
		commit = func() {}
	case 1:
		cmd.op = "place"
		cmd.owner = []string{"alice", "bob"}[in.next()%2]
		cmd.items = make([]domain.OrderLineRequest, 1+int(in.next())%3)
		for i := range cmd.items {
			qty := int64(in.next()%14) - 1
			if qty == 12 {
				qty = domain.MaxQuantity + int64(in.next()%2)
			}
			cmd.items[i] = line(fuzzSKUs[int(in.next())%len(fuzzSKUs)], qty)
		}
		cmd.orderID = "o-" + strconv.Itoa(n)
		before := levelsOf(stock)
		var o *domain.Order
		o, evs, err = domain.PlaceNewOrder(cmd.orderID, cmd.actor, placeCmd(cmd.owner, cmd.items...), w.catalog, stock, now)
		if err != nil {
			if got := levelsOf(stock); !maps.Equal(got, before) {
				return cmd, nil, fmt.Errorf("PlaceNewOrder failed with %v and changed stock from %v to %v", err, before, got)
			}
		}
		commit = func() { w.orders = append(w.orders, fuzzOrder{order: o, lines: o.Lines()}) }
	default:
		cmd.op = [...]string{2: "pay", 3: "ship", 4: "cancel", 5: "deliver"}[op]
		if len(w.orders) == 0 {
			return cmd, nil, nil
		}
		i := int(in.next()) % len(w.orders)
		o := domain.RehydrateOrder(w.orders[i].order.Snapshot())
		cmd.orderID, cmd.status = o.ID(), o.Status()
		evs, err = applyOp(o, cmd.op, cmd.actor, stock, now)
		if err == nil && !slices.Equal(o.Lines(), w.orders[i].lines) {
			return cmd, nil, fmt.Errorf("lines changed from %v to %v", w.orders[i].lines, o.Lines())
		}
		commit = func() { w.orders[i].order = o }
	}
	if err != nil {
		cmd.rejected = err
		switch domain.ErrorCode(err) {
		case "":
			return cmd, nil, fmt.Errorf("non-domain error: %w", err)
		case domain.CodeConflict:
			return cmd, nil, fmt.Errorf("internal conflict on a consistent world: %w", err)
		}
		return cmd, nil, nil
	}
	w.stock = stock
	commit()
	return cmd, evs, nil
}

func (w *fuzzWorld) check(evs []domain.Event) error {
	for _, ev := range evs {
		key := aggregateKey{ev.AggregateType, ev.AggregateID}
		if want := w.versions[key] + 1; ev.AggregateVersion != want {
			return fmt.Errorf("%s %v has version %d, want %d", ev.Type, key, ev.AggregateVersion, want)
		}
		w.versions[key] = ev.AggregateVersion
		if v, ok := payloadVersion(ev); !ok || v != ev.AggregateVersion {
			return fmt.Errorf("%s %v v%d carries state of version %d (known payload: %v)", ev.Type, key, ev.AggregateVersion, v, ok)
		}
		if lv, ok := payloadLevels(ev); ok && (lv.OnHand < 0 || lv.Reserved < 0 || lv.Available != lv.OnHand-lv.Reserved || lv.Available < 0) {
			return fmt.Errorf("%s %v carries broken levels %+v", ev.Type, key, lv)
		}
	}
	reserved := map[string]int64{}
	for _, fo := range w.orders {
		o := fo.order
		if v := w.versions[aggregateKey{domain.AggregateOrder, o.ID()}]; o.Version() != v {
			return fmt.Errorf("order %s is at version %d, its last event at %d", o.ID(), o.Version(), v)
		}
		if s := o.Status(); s == domain.StatusPlaced || s == domain.StatusPaid {
			for _, l := range fo.lines {
				reserved[l.SKU] += l.Quantity
			}
		}
	}
	for sku, inv := range w.stock {
		lv := inv.Levels()
		if lv.OnHand < 0 || lv.Reserved < 0 || lv.Available < 0 || lv.Available != lv.OnHand-lv.Reserved {
			return fmt.Errorf("levels of %s broke an invariant: %+v", sku, lv)
		}
		if lv.Reserved != reserved[sku] {
			return fmt.Errorf("%s has %d reserved, open orders hold %d", sku, lv.Reserved, reserved[sku])
		}
		if v := w.versions[aggregateKey{domain.AggregateInventory, sku}]; lv.Version != v {
			return fmt.Errorf("inventory %s is at version %d, its last event at %d", sku, lv.Version, v)
		}
	}
	return nil
}

func payloadLevels(ev domain.Event) (domain.InventoryLevels, bool) {
	switch p := ev.Payload.(type) {
	case domain.InventoryAdjusted:
		return p.InventoryLevels, true
	case domain.InventoryReserved:
		return p.InventoryLevels, true
	case domain.InventoryReleased:
		return p.InventoryLevels, true
	case domain.InventoryShipped:
		return p.InventoryLevels, true
	}
	return domain.InventoryLevels{}, false
}

// payloadVersion returns the aggregate version of the state an event carries.
func payloadVersion(ev domain.Event) (int64, bool) {
	if lv, ok := payloadLevels(ev); ok {
		return lv.Version, true
	}
	switch p := ev.Payload.(type) {
	case domain.OrderPlaced:
		return p.Version, true
	case domain.OrderPaid:
		return p.Version, true
	case domain.OrderShipped:
		return p.Version, true
	case domain.OrderDelivered:
		return p.Version, true
	case domain.OrderCancelled:
		return p.Version, true
	}
	return 0, false
}

// FuzzInventoryNeverNegative drives the aggregates with random command
// sequences and checks the stock invariants after every step.
func FuzzInventoryNeverNegative(f *testing.F) {
	// A command is an op byte (%6: adjust, place, pay, ship, cancel, deliver),
	// an actor byte (%4: admin, alice, bob, customer without subject), then
	// adjust: sku (%3), int8 delta, scale (%16 == 0 multiplies by 10^7);
	// place: owner (%2: alice, bob), item count (1 + %3), per item a quantity
	// byte (%14 − 1, where 12 reads one more byte for 1000 or 1001) and a sku
	// (%4, the last unknown); the others: an order index.
	f.Add([]byte{})
	// Count in 10 apple-1; alice orders 3, pays; admin ships and delivers.
	f.Add([]byte{0, 0, 1, 10, 1, 1, 1, 0, 0, 4, 1, 2, 1, 0, 3, 0, 0, 5, 0, 0})
	// Two orders compete for 5 CHAIR_3; cancelling the first frees stock;
	// counting out below reserved fails, down to reserved succeeds.
	f.Add([]byte{
		0, 0, 0, 5, 1, 1, 1, 0, 0, 5, 0, 1, 2, 1, 0, 3, 0, 4, 1, 0,
		1, 2, 1, 0, 3, 0, 0, 0, 0, 0xfc, 1, 0, 0, 0, 0xfd, 1,
	})
	// Acting for others, duplicate skus, missing stock, customers shipping and
	// delivering, cancelling a shipped order.
	f.Add([]byte{
		0, 0, 2, 100, 1, 1, 2, 0, 0, 2, 2, 1, 1, 0, 1, 2, 2, 3, 2, 1, 1, 0, 1, 6, 2, 2, 1,
		1, 1, 0, 0, 6, 2, 2, 2, 0, 3, 1, 0, 2, 1, 0, 3, 1, 0, 5, 1, 0, 4, 3, 0,
		3, 0, 0, 4, 0, 0, 5, 0, 0,
	})
	// Adjustment and quantity limits and an unknown sku.
	f.Add([]byte{
		0, 0, 1, 100, 0, 0, 0, 1, 101, 0, 0, 0, 1, 0x9c, 0, 0, 0, 1, 100, 0,
		1, 0, 0, 0, 13, 0, 1, 1, 0, 0, 0, 13, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 2, 3,
	})
	// A three-sku order where only the last sku in lock order lacks stock.
	f.Add([]byte{0, 0, 0, 5, 1, 0, 0, 1, 5, 1, 0, 0, 2, 1, 1, 1, 1, 0, 2, 3, 0, 3, 1, 3, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		w := &fuzzWorld{
			catalog:  testCatalog(),
			stock:    stockOf(t, map[string]int64{"CHAIR_3": 0, "apple-1": 0, "banana.2": 0}),
			versions: map[aggregateKey]int64{},
		}
		for sku, inv := range w.stock {
			w.versions[aggregateKey{domain.AggregateInventory, sku}] = inv.Version()
		}
		in := &byteStream{data: data[:min(len(data), maxFuzzInput)]}
		for n := 0; !in.done(); n++ {
			cmd, evs, err := w.step(in, n, t0.Add(time.Duration(n)*time.Second))
			if err != nil {
				t.Fatalf("step %d (%v): %v", n, cmd, err)
			}
			if err := w.check(evs); err != nil {
				t.Fatalf("after step %d (%v): %v", n, cmd, err)
			}
		}
	})
}
