package boltstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// Buckets of the order summary model.
var (
	ordersBucket     = []byte("orders")      // order id → version, seq, user, view JSON
	userOrdersBucket = []byte("user_orders") // user key + list member → empty
)

// OrderStore is the order summary read model, in its own file:
//
//	orders        {order_id} → version (8 bytes), seq (8), user length (2), user, view (the OrderView as JSON)
//	user_orders   {uvarint len(user_id)}{user_id}{member} → empty, member as in the Redis store:
//	              "<placed_at key>|<order_id>", so that the key order is (user, placed_at, order_id)
type OrderStore struct{ *file }

var (
	_ projections.Applier       = (*OrderStore)(nil)
	_ projections.OrderReader   = (*OrderStore)(nil)
	_ projections.VersionReader = (*OrderStore)(nil)
)

// OpenOrders opens, creating it if needed, the order summary model kept in
// the file at path.
func OpenOrders(path string) (*OrderStore, error) {
	f, err := openFile(path, "orders", ordersBucket, userOrdersBucket)
	if err != nil {
		return nil, err
	}
	return &OrderStore{f}, nil
}

// orderWrite is one order event, decoded and encoded for the store.
type orderWrite struct {
	seq     uint64
	orderID string
	userID  string
	version int64
	view    []byte
	member  string
}

// Apply writes the summary each order event carries when the event's order
// version is above the one the store holds, and keeps the order in its
// user's list. Events of other aggregates are ignored. The batch is one
// transaction.
func (s *OrderStore) Apply(ctx context.Context, events []projections.Envelope) error {
	return s.ApplyPartition(ctx, -1, events)
}

// ApplyPartition is Apply for a batch that partition of the stream
// delivered: it also raises the partition's checkpoint to the sequence of
// the last event applied, in the same transaction. A negative partition
// records no checkpoint.
func (s *OrderStore) ApplyPartition(ctx context.Context, partition int, events []projections.Envelope) error {
	return s.apply(ctx, partition, func(tx *bolt.Tx) (uint64, error) {
		orders, lists := tx.Bucket(ordersBucket), tx.Bucket(userOrdersBucket)
		var last uint64
		for _, e := range events {
			w, ok, err := decodeOrderEvent(e)
			if err != nil {
				return last, err
			}
			if ok {
				if err := writeOrder(orders, lists, w); err != nil {
					return last, err
				}
			}
			last = e.Seq
		}
		return last, nil
	})
}

func writeOrder(orders, lists *bolt.Bucket, w orderWrite) error {
	key := []byte(w.orderID)
	if cur, ok := storedVersion(orders.Get(key)); ok && cur >= w.version {
		return nil
	}
	record := putHeader(make([]byte, 0, versionedHeader+2+len(w.userID)+len(w.view)), w.version, w.seq)
	record = binary.BigEndian.AppendUint16(record, uint16(len(w.userID)))
	record = append(append(record, w.userID...), w.view...)
	if err := orders.Put(key, record); err != nil {
		return err
	}
	// placed_at never changes, so neither does the member: a newer version
	// of a listed order finds its entry in place.
	return lists.Put(append(userKey(w.userID), w.member...), nil)
}

// userKey is the prefix of userID's list entries: its length first, so that
// no user's entries sit among another's.
func userKey(userID string) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(userID))), userID...)
}

// decodeOrderEvent decodes an order event; ok is false for the events this
// model does not follow.
func decodeOrderEvent(e projections.Envelope) (w orderWrite, ok bool, err error) {
	switch e.EventType {
	case domain.EventOrderPlaced, domain.EventOrderPaid, domain.EventOrderShipped,
		domain.EventOrderDelivered, domain.EventOrderCancelled:
	default:
		return orderWrite{}, false, nil
	}
	// Every order event embeds the snapshot at its top level; OrderCancelled's
	// extra fields are not part of the summary.
	var snap domain.OrderSnapshot
	if err := decodePayload(e, &snap); err != nil {
		return orderWrite{}, false, err
	}
	if snap.OrderID == "" {
		return orderWrite{}, false, missingField(e, "order_id")
	}
	if snap.UserID == "" {
		return orderWrite{}, false, missingField(e, "user_id")
	}
	if len(snap.UserID) > maxUserIDLen {
		return orderWrite{}, false, &projections.PoisonError{Seq: e.Seq,
			Reason: fmt.Sprintf("%s: user_id of %d bytes, above %d", e.EventType, len(snap.UserID), maxUserIDLen)}
	}
	view := projections.OrderView{
		OrderID:    snap.OrderID,
		UserID:     snap.UserID,
		Status:     string(snap.Status),
		Items:      make([]projections.OrderLineView, 0, len(snap.Items)),
		TotalCents: snap.TotalCents,
		Version:    snap.Version,
		PlacedAt:   snap.PlacedAt.UTC(),
		UpdatedAt:  snap.UpdatedAt.UTC(),
	}
	for _, it := range snap.Items {
		view.Items = append(view.Items, projections.OrderLineView{SKU: it.SKU, Quantity: it.Quantity, PriceCents: it.PriceCents})
	}
	encoded, err := json.Marshal(view)
	if err != nil {
		return orderWrite{}, false, &projections.PoisonError{Seq: e.Seq, Reason: fmt.Sprintf("%s: encode view: %v", e.EventType, err)}
	}
	return orderWrite{
		seq:     e.Seq,
		orderID: snap.OrderID,
		userID:  snap.UserID,
		version: snap.Version,
		view:    encoded,
		member:  listMember(view.PlacedAt, snap.OrderID),
	}, true, nil
}

// maxUserIDLen is the longest user id a record's length field holds.
const maxUserIDLen = 1<<16 - 1

// orderRecord splits a stored order into its user and view.
func orderRecord(record []byte) (userID string, view []byte, err error) {
	if len(record) < versionedHeader+2 {
		return "", nil, fmt.Errorf("record of %d bytes is too short", len(record))
	}
	n := int(binary.BigEndian.Uint16(record[versionedHeader:]))
	rest := record[versionedHeader+2:]
	if len(rest) < n {
		return "", nil, fmt.Errorf("record holds %d bytes of a %d-byte user", len(rest), n)
	}
	return string(rest[:n]), rest[n:], nil
}

// Order returns the order or projections.ErrNotFound.
func (s *OrderStore) Order(ctx context.Context, id string) (projections.OrderView, error) {
	_, raw, err := s.OrderJSON(ctx, id)
	if err != nil {
		return projections.OrderView{}, err
	}
	var v projections.OrderView
	if err := json.Unmarshal(raw, &v); err != nil {
		return projections.OrderView{}, fmt.Errorf("boltstore: order %s: decode: %w", id, err)
	}
	return v, nil
}

// OrderJSON returns the order's user and stored view.
func (s *OrderStore) OrderJSON(ctx context.Context, id string) (string, []byte, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	var user string
	var view []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		record := tx.Bucket(ordersBucket).Get([]byte(id))
		if record == nil {
			return projections.ErrNotFound
		}
		u, v, err := orderRecord(record)
		user, view = u, bytes.Clone(v)
		return err
	})
	if errors.Is(err, projections.ErrNotFound) {
		return "", nil, err
	}
	if err != nil {
		return "", nil, fmt.Errorf("boltstore: order %s: %w", id, err)
	}
	return user, view, nil
}

// UserOrders returns up to limit orders of userID, newest first, after
// cursor: one read transaction walking the user's entries backwards.
func (s *OrderStore) UserOrders(ctx context.Context, userID string, limit int, cursor string) ([]projections.OrderListEntry, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("boltstore: user orders: limit %d is not positive", limit)
	}
	prefix := userKey(userID)
	// The walk starts below upper: after the cursor's member, or past the
	// user's last entry (members start with a hex digit, below 0xff).
	upper := append(bytes.Clone(prefix), 0xff)
	if cursor != "" {
		member, ok := decodeCursor(cursor)
		if !ok {
			return nil, "", &projections.InvalidCursorError{Cursor: cursor}
		}
		upper = append(bytes.Clone(prefix), member...)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	entries := []projections.OrderListEntry{}
	next := ""
	err := s.db.View(func(tx *bolt.Tx) error {
		orders := tx.Bucket(ordersBucket)
		c := tx.Bucket(userOrdersBucket).Cursor()
		k, _ := c.Seek(upper)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		var last []byte
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
			if len(entries) == limit {
				next = encodeCursor(string(last))
				break
			}
			member := k[len(prefix):]
			last = member
			_, raw, err := orderRecord(orders.Get(member[memberIDOffset:]))
			if err != nil {
				return fmt.Errorf("order %s: %w", member[memberIDOffset:], err)
			}
			var v projections.OrderView
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("order %s: decode: %w", member[memberIDOffset:], err)
			}
			entries = append(entries, projections.OrderListEntry{
				OrderID: v.OrderID, Status: v.Status, TotalCents: v.TotalCents, PlacedAt: v.PlacedAt,
			})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("boltstore: user %s orders: %w", userID, err)
	}
	return entries, next, nil
}

// AppliedVersion returns the version of the order the model shows, 0 when it
// has none. Only "order" aggregates are kept here.
func (s *OrderStore) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	if aggregateType != domain.AggregateOrder {
		return 0, fmt.Errorf("boltstore: the order model has no %q aggregates", aggregateType)
	}
	return s.version(ctx, ordersBucket, aggregateID)
}

// version reads the version of a record of bucket, 0 when absent.
func (f *file) version(ctx context.Context, bucket []byte, key string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var v int64
	err := f.db.View(func(tx *bolt.Tx) error {
		v, _ = storedVersion(tx.Bucket(bucket).Get([]byte(key)))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: version of %s %s: %w", f.model, key, err)
	}
	return v, nil
}

// A list member is "<micro><nano>|<order_id>": <micro> is the 16 hex digits
// of placed_at in Unix microseconds with the sign bit flipped (so that the
// hex order is the time order, before 1970 too) and <nano> the 3 decimal
// digits of the nanoseconds below the microsecond.
const (
	memberTimeLen  = 19
	memberIDOffset = memberTimeLen + 1
)

func listMember(placedAt time.Time, orderID string) string {
	return fmt.Sprintf("%016x%03d|%s", uint64(placedAt.UnixMicro())^(1<<63), placedAt.Nanosecond()%1000, orderID)
}

// The cursor is the last member of the page, base64url: opaque to clients,
// checked for the member's shape when it comes back.
func encodeCursor(member string) string { return base64.RawURLEncoding.EncodeToString([]byte(member)) }

func decodeCursor(cursor string) (string, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(raw) <= memberIDOffset || raw[memberTimeLen] != '|' {
		return "", false
	}
	for i, c := range raw[:memberTimeLen] {
		digit := '0' <= c && c <= '9' || i < 16 && 'a' <= c && c <= 'f'
		if !digit {
			return "", false
		}
	}
	return string(raw), true
}
