package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

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

func writeOrder(orders, lists *bolt.Bucket, w projections.OrderChange) error {
	key := []byte(w.OrderID)
	if cur, ok := storedVersion(orders.Get(key)); ok && cur >= w.Version {
		return nil
	}
	record := putHeader(make([]byte, 0, versionedHeader+2+len(w.UserID)+len(w.View)), w.Version, w.Seq)
	record = binary.BigEndian.AppendUint16(record, uint16(len(w.UserID)))
	record = append(append(record, w.UserID...), w.View...)
	if err := orders.Put(key, record); err != nil {
		return err
	}
	// placed_at never changes, so neither does the member: a newer version
	// of a listed order finds its entry in place.
	return lists.Put(append(userKey(w.UserID), w.Member...), nil)
}

// userKey is the prefix of userID's list entries: its length first, so that
// no user's entries sit among another's.
func userKey(userID string) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(userID))), userID...)
}

// maxUserIDLen is the longest user id a record's length field holds.
const maxUserIDLen = 1<<16 - 1

// decodeOrderEvent is projections.DecodeOrderEvent, refusing as poison a
// user id longer than a record's length field holds.
func decodeOrderEvent(e projections.Envelope) (projections.OrderChange, bool, error) {
	c, ok, err := projections.DecodeOrderEvent(e)
	if err == nil && ok && len(c.UserID) > maxUserIDLen {
		return projections.OrderChange{}, false, &projections.PoisonError{Seq: e.Seq,
			Reason: fmt.Sprintf("%s: user_id of %d bytes, above %d", e.EventType, len(c.UserID), maxUserIDLen)}
	}
	return c, ok, err
}

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
		member, ok := projections.DecodeOrderCursor(cursor)
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
				next = projections.EncodeOrderCursor(string(last))
				break
			}
			member := k[len(prefix):]
			last = member
			_, raw, err := orderRecord(orders.Get(member[projections.OrderMemberIDOffset:]))
			if err != nil {
				return fmt.Errorf("order %s: %w", member[projections.OrderMemberIDOffset:], err)
			}
			var v projections.OrderView
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("order %s: decode: %w", member[projections.OrderMemberIDOffset:], err)
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
