package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// Buckets of the sales model.
var (
	salesOrdersBucket = []byte("sales_orders")  // order id → salesOrder as JSON
	salesByTimeBucket = []byte("sales_by_time") // placed_at key (8 bytes) + order id → empty, counted orders only
	salesTotalsBucket = []byte("sales_totals")  // group kind (1) + day key (8) + group value → orders, units, revenue (8 each)
)

// Group kinds of salesTotalsBucket, one per group_by.
var groupKinds = map[string]byte{"day": 'd', "sku": 's', "category": 'c'}

const (
	dayMicros     = int64(24 * time.Hour / time.Microsecond)
	totalsLen     = 3 * 8
	timeKeyLen    = 8
	totalsHeadLen = 1 + timeKeyLen
)

// SalesStore is the sales analytics read model, in its own file. It keeps
// each order's lines as placed and, for the orders that count (those not
// cancelled), the totals of every (day, SKU), (day, category) and day,
// maintained as events are applied: a placement adds the order's lines, a
// cancellation subtracts them. A report sums the totals of the whole days in
// its range and reads the orders of the partial days at its ends from a
// placed_at index, so that [from, to) is exact to the microsecond.
type SalesStore struct{ *file }

var (
	_ projections.Applier     = (*SalesStore)(nil)
	_ projections.SalesReader = (*SalesStore)(nil)
)

// OpenSales opens, creating it if needed, the sales model kept in the file
// at path.
func OpenSales(path string) (*SalesStore, error) {
	f, err := openFile(path, "sales", salesOrdersBucket, salesByTimeBucket, salesTotalsBucket)
	if err != nil {
		return nil, err
	}
	return &SalesStore{f}, nil
}

// salesOrder is what the model keeps of an order: the version that guards
// it, whether it is cancelled, when it was placed (Unix microseconds) and its
// lines.
type salesOrder struct {
	Version   int64       `json:"version"`
	Seq       uint64      `json:"seq"`
	Cancelled bool        `json:"cancelled"`
	PlacedUS  int64       `json:"placed_us"`
	Lines     []salesLine `json:"lines"`
}

type salesLine struct {
	SKU        string `json:"sku"`
	Category   string `json:"category"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
}

// Apply records the OrderPlaced and OrderCancelled events of the batch when
// the event's order version is above the one the model holds for the order,
// moving the order's lines into the totals or out of them; other events are
// ignored. The batch is one transaction.
func (s *SalesStore) Apply(ctx context.Context, events []projections.Envelope) error {
	return s.ApplyPartition(ctx, -1, events)
}

// ApplyPartition is Apply for a batch that partition of the stream
// delivered: it also raises the partition's checkpoint to the sequence of
// the last event applied, in the same transaction. A negative partition
// records no checkpoint.
func (s *SalesStore) ApplyPartition(ctx context.Context, partition int, events []projections.Envelope) error {
	return s.apply(ctx, partition, func(tx *bolt.Tx) (uint64, error) {
		var last uint64
		for _, e := range events {
			id, order, ok, err := decodeSalesEvent(e)
			if err != nil {
				return last, err
			}
			if ok {
				if err := writeSalesOrder(tx, id, order); err != nil {
					return last, err
				}
			}
			last = e.Seq
		}
		return last, nil
	})
}

// decodeSalesEvent decodes an event of the sales model; ok is false for the
// events it does not follow.
func decodeSalesEvent(e projections.Envelope) (orderID string, o salesOrder, ok bool, err error) {
	switch e.EventType {
	case domain.EventOrderPlaced:
	case domain.EventOrderCancelled:
		o.Cancelled = true
	default:
		return "", salesOrder{}, false, nil
	}
	// Both events embed the order snapshot at their top level.
	var snap domain.OrderSnapshot
	if err := projections.DecodePayload(e, &snap); err != nil {
		return "", salesOrder{}, false, err
	}
	if snap.OrderID == "" {
		return "", salesOrder{}, false, projections.MissingField(e, "order_id")
	}
	if snap.Version < 1 {
		return "", salesOrder{}, false, &projections.PoisonError{Seq: e.Seq,
			Reason: fmt.Sprintf("%s: order version %d is not positive", e.EventType, snap.Version)}
	}
	o.Version, o.Seq, o.PlacedUS = snap.Version, e.Seq, snap.PlacedAt.UnixMicro()
	o.Lines = make([]salesLine, len(snap.Items))
	for i, it := range snap.Items {
		o.Lines[i] = salesLine{SKU: it.SKU, Category: it.Category, Quantity: it.Quantity, PriceCents: it.PriceCents}
	}
	return snap.OrderID, o, true, nil
}

// writeSalesOrder stores o when it is newer than what the model holds of the
// order, taking the old version's lines out of the totals and putting the
// new one's in.
func writeSalesOrder(tx *bolt.Tx, orderID string, o salesOrder) error {
	orders, byTime := tx.Bucket(salesOrdersBucket), tx.Bucket(salesByTimeBucket)
	key := []byte(orderID)
	if raw := orders.Get(key); raw != nil {
		var old salesOrder
		if err := json.Unmarshal(raw, &old); err != nil {
			return fmt.Errorf("order %s: decode: %w", orderID, err)
		}
		if old.Version >= o.Version {
			return nil
		}
		if !old.Cancelled {
			if err := addTotals(tx, old, -1); err != nil {
				return err
			}
			if err := byTime.Delete(placedKey(old.PlacedUS, orderID)); err != nil {
				return err
			}
		}
	}
	if !o.Cancelled {
		if err := addTotals(tx, o, 1); err != nil {
			return err
		}
		if err := byTime.Put(placedKey(o.PlacedUS, orderID), nil); err != nil {
			return err
		}
	}
	record, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return orders.Put(key, record)
}

// addTotals adds sign × the order's contribution to every total it counts in:
// its day, and each of its SKUs and categories on that day (an order counts
// once in each, whatever its number of lines there).
func addTotals(tx *bolt.Tx, o salesOrder, sign int64) error {
	totals := tx.Bucket(salesTotalsBucket)
	for kind, groups := range o.groups() {
		for value, t := range groups {
			key := totalsKey(kind, dayOf(o.PlacedUS), value)
			cur := decodeTotals(totals.Get(key))
			cur.Orders += sign * t.Orders
			cur.Units += sign * t.Units
			cur.RevenueCents += sign * t.RevenueCents
			var err error
			if cur.Orders == 0 {
				err = totals.Delete(key)
			} else {
				err = totals.Put(key, encodeTotals(cur))
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// groups is the order's contribution to each group: kind → group value →
// one order, its units and its revenue there.
func (o salesOrder) groups() map[byte]map[string]projections.SalesRow {
	out := map[byte]map[string]projections.SalesRow{'d': {}, 's': {}, 'c': {}}
	for _, l := range o.Lines {
		for kind, value := range map[byte]string{'d': "", 's': l.SKU, 'c': l.Category} {
			t := out[kind][value]
			t.Orders = 1
			t.Units += l.Quantity
			t.RevenueCents += l.Quantity * l.PriceCents
			out[kind][value] = t
		}
	}
	return out
}

// Sales reports the orders that are not cancelled, placed in [q.From, q.To),
// grouped by q.GroupBy ("day" keys are YYYY-MM-DD in UTC) and ordered by key.
// One read transaction.
func (s *SalesStore) Sales(ctx context.Context, q projections.SalesQuery) ([]projections.SalesRow, error) {
	kind, ok := groupKinds[q.GroupBy]
	if !ok {
		return nil, fmt.Errorf("boltstore: sales: unknown group_by %q: want day, sku or category", q.GroupBy)
	}
	report := []projections.SalesRow{}
	from, to := ceilMicro(q.From), ceilMicro(q.To)
	if from >= to {
		return report, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rows := map[string]projections.SalesRow{}
	add := func(key string, t projections.SalesRow) {
		r := rows[key]
		r.Orders += t.Orders
		r.Units += t.Units
		r.RevenueCents += t.RevenueCents
		rows[key] = r
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		// Whole days [firstDay, endDay) come from the totals; the partial
		// days at either end from the orders themselves.
		firstDay, endDay := -floorDiv(-from, dayMicros), floorDiv(to, dayMicros)
		if firstDay >= endDay {
			return scanOrders(tx, kind, from, to, add)
		}
		if err := scanOrders(tx, kind, from, firstDay*dayMicros, add); err != nil {
			return err
		}
		if err := scanOrders(tx, kind, endDay*dayMicros, to, add); err != nil {
			return err
		}
		c := tx.Bucket(salesTotalsBucket).Cursor()
		end := totalsKey(kind, endDay, "")[:totalsHeadLen]
		for k, v := c.Seek(totalsKey(kind, firstDay, "")); k != nil && bytes.Compare(k[:totalsHeadLen], end) < 0; k, v = c.Next() {
			value := string(k[totalsHeadLen:])
			if kind == 'd' {
				value = dayName(decodeDayKey(k[1:totalsHeadLen]))
			}
			add(value, decodeTotals(v))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: sales: %w", err)
	}
	for _, key := range slices.Sorted(maps.Keys(rows)) {
		r := rows[key]
		r.Key = key
		report = append(report, r)
	}
	return report, nil
}

// scanOrders adds the contribution of every counted order placed in
// [from, to) microseconds to the groups of kind.
func scanOrders(tx *bolt.Tx, kind byte, from, to int64, add func(string, projections.SalesRow)) error {
	if from >= to {
		return nil
	}
	orders := tx.Bucket(salesOrdersBucket)
	end := timeKey(to)
	c := tx.Bucket(salesByTimeBucket).Cursor()
	for k, _ := c.Seek(timeKey(from)); k != nil && bytes.Compare(k[:timeKeyLen], end) < 0; k, _ = c.Next() {
		id := k[timeKeyLen:]
		var o salesOrder
		if err := json.Unmarshal(orders.Get(id), &o); err != nil {
			return fmt.Errorf("order %s: decode: %w", id, err)
		}
		for value, t := range o.groups()[kind] {
			if kind == 'd' {
				value = dayName(dayOf(o.PlacedUS))
			}
			add(value, t)
		}
	}
	return nil
}

// timeKey orders Unix microseconds as bytes: big-endian with the sign bit
// flipped, so that times before 1970 sort first.
func timeKey(us int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(us)^(1<<63)) }

func placedKey(us int64, orderID string) []byte { return append(timeKey(us), orderID...) }

func totalsKey(kind byte, day int64, value string) []byte {
	return append(append([]byte{kind}, timeKey(day)...), value...)
}

func decodeDayKey(k []byte) int64 { return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)) }

// dayOf is the UTC day (days since 1970-01-01) of a time in Unix microseconds.
func dayOf(us int64) int64 { return floorDiv(us, dayMicros) }

func dayName(day int64) string { return time.UnixMicro(day * dayMicros).UTC().Format(time.DateOnly) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func encodeTotals(t projections.SalesRow) []byte {
	b := make([]byte, 0, totalsLen)
	for _, n := range []int64{t.Orders, t.Units, t.RevenueCents} {
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return b
}

// decodeTotals reads a totals value; nil is all zero.
func decodeTotals(b []byte) projections.SalesRow {
	if len(b) != totalsLen {
		return projections.SalesRow{}
	}
	n := func(i int) int64 { return int64(binary.BigEndian.Uint64(b[i*8:])) }
	return projections.SalesRow{Orders: n(0), Units: n(1), RevenueCents: n(2)}
}

// ceilMicro is t in Unix microseconds, rounded up: for times kept in whole
// microseconds, "us >= ceilMicro(t)" is "at or after t" and
// "us < ceilMicro(t)" is "before t".
func ceilMicro(t time.Time) int64 {
	us := t.UnixMicro()
	if t.Nanosecond()%1000 != 0 {
		us++
	}
	return us
}
