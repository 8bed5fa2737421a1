package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// inventoryBucket holds the stock model: sku → version, seq, on_hand,
// reserved, available (8 bytes each).
var inventoryBucket = []byte("inventory")

const inventoryRecordLen = versionedHeader + 3*8

// InventoryStore is the stock read model, in its own file.
type InventoryStore struct{ *file }

var (
	_ projections.Applier          = (*InventoryStore)(nil)
	_ projections.InventoryReader  = (*InventoryStore)(nil)
	_ projections.VersionReader    = (*InventoryStore)(nil)
	_ projections.StockLevelReader = (*InventoryStore)(nil)
)

// OpenInventory opens, creating it if needed, the stock model kept in the
// file at path.
func OpenInventory(path string) (*InventoryStore, error) {
	f, err := openFile(path, "inventory", inventoryBucket)
	if err != nil {
		return nil, err
	}
	return &InventoryStore{f}, nil
}

// Apply sets the levels each inventory event carries when the event's
// inventory version is above the one the store holds. ProductCreated creates
// the stock at zero, version 0, when the SKU has none yet, so that it never
// hides a level event whatever the order in which they arrive. Other events
// are ignored. The batch is one transaction.
func (s *InventoryStore) Apply(ctx context.Context, events []projections.Envelope) error {
	return s.ApplyPartition(ctx, -1, events)
}

// ApplyPartition is Apply for a batch that partition of the stream
// delivered: it also raises the partition's checkpoint to the sequence of
// the last event applied, in the same transaction. A negative partition
// records no checkpoint.
func (s *InventoryStore) ApplyPartition(ctx context.Context, partition int, events []projections.Envelope) error {
	return s.apply(ctx, partition, func(tx *bolt.Tx) (uint64, error) {
		stock := tx.Bucket(inventoryBucket)
		var last uint64
		for _, e := range events {
			w, ok, err := projections.DecodeInventoryEvent(e)
			if err != nil {
				return last, err
			}
			if ok {
				if err := writeInventory(stock, w); err != nil {
					return last, err
				}
			}
			last = e.Seq
		}
		return last, nil
	})
}

func writeInventory(stock *bolt.Bucket, w projections.InventoryChange) error {
	l := w.Levels
	key := []byte(l.SKU)
	cur, exists := storedVersion(stock.Get(key))
	if exists && (w.OnlyIfAbsent || cur >= l.Version) {
		return nil
	}
	record := putHeader(make([]byte, 0, inventoryRecordLen), l.Version, w.Seq)
	for _, n := range []int64{l.OnHand, l.Reserved, l.Available} {
		record = binary.BigEndian.AppendUint64(record, uint64(n))
	}
	return stock.Put(key, record)
}

// Inventory returns the stock of sku or projections.ErrNotFound.
func (s *InventoryStore) Inventory(ctx context.Context, sku string) (projections.InventoryView, error) {
	if err := ctx.Err(); err != nil {
		return projections.InventoryView{}, err
	}
	var v projections.InventoryView
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		record := tx.Bucket(inventoryBucket).Get([]byte(sku))
		if record == nil {
			return nil
		}
		if len(record) != inventoryRecordLen {
			return fmt.Errorf("record of %d bytes, want %d", len(record), inventoryRecordLen)
		}
		found = true
		num := func(i int) int64 { return int64(binary.BigEndian.Uint64(record[i*8:])) }
		v = projections.InventoryView{SKU: sku, Version: num(0), OnHand: num(2), Reserved: num(3), Available: num(4)}
		return nil
	})
	if err != nil {
		return projections.InventoryView{}, fmt.Errorf("boltstore: inventory %s: %w", sku, err)
	}
	if !found {
		return projections.InventoryView{}, projections.ErrNotFound
	}
	return v, nil
}

// Levels implements projections.StockLevelReader, in one read transaction.
func (s *InventoryStore) Levels(ctx context.Context, skus []string) ([]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	levels := make([]int64, len(skus))
	err := s.db.View(func(tx *bolt.Tx) error {
		stock := tx.Bucket(inventoryBucket)
		for i, sku := range skus {
			record := stock.Get([]byte(sku))
			if record == nil {
				continue
			}
			if len(record) != inventoryRecordLen {
				return fmt.Errorf("%s: record of %d bytes, want %d", sku, len(record), inventoryRecordLen)
			}
			levels[i] = int64(binary.BigEndian.Uint64(record[4*8:]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: stock levels: %w", err)
	}
	return levels, nil
}

// AppliedVersion returns the inventory version the model shows for the sku
// aggregateID, 0 when it has none. Only "inventory" aggregates are kept here.
func (s *InventoryStore) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	if aggregateType != domain.AggregateInventory {
		return 0, fmt.Errorf("boltstore: the inventory model has no %q aggregates", aggregateType)
	}
	return s.version(ctx, inventoryBucket, aggregateID)
}
