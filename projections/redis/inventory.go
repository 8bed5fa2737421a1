package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// InventoryStore is the stock read model. Under its prefix:
//
//	inventory:{sku}   hash: seq, on_hand, reserved, available, version
type InventoryStore struct {
	client  redis.UniversalClient
	prefix  string
	perCall int // keys per applyScript call
}

var (
	_ projections.Applier          = (*InventoryStore)(nil)
	_ projections.InventoryReader  = (*InventoryStore)(nil)
	_ projections.VersionReader    = (*InventoryStore)(nil)
	_ projections.StockLevelReader = (*InventoryStore)(nil)
)

// NewInventoryStore returns the stock model stored under prefix, which names
// the generation, such as "jetcqrs:g1:".
func NewInventoryStore(client redis.UniversalClient, prefix string) *InventoryStore {
	return &InventoryStore{client: client, prefix: prefix, perCall: keysPerCall(client)}
}

func (s *InventoryStore) inventoryKey(sku string) string { return s.prefix + "inventory:" + sku }

// InventoryEventTypes are the events the stock model reads; its
// projection's consumers need no others (a product update changes no stock).
var InventoryEventTypes = []string{domain.EventProductCreated, domain.EventInventoryAdjusted,
	domain.EventInventoryReserved, domain.EventInventoryReleased, domain.EventInventoryShipped}

// Apply sets the levels each inventory event carries when the event's
// inventory version is above the one inventory:{sku} holds. ProductCreated
// creates the key with zero stock at version 0 when it does not exist yet, so
// that it never hides a level event whatever the order in which they arrive. Other
// events are ignored. The batch is one pipeline.
func (s *InventoryStore) Apply(ctx context.Context, events []projections.Envelope) error {
	writes := make([]projections.InventoryChange, 0, len(events))
	var poison error
	for _, e := range events {
		w, ok, err := projections.DecodeInventoryEvent(e)
		if err != nil {
			poison = err
			break
		}
		if ok {
			writes = append(writes, w)
		}
	}
	if len(writes) > 0 {
		hashes := make([]hashWrite, len(writes))
		for i, w := range writes {
			l, mode := w.Levels, modeNewer
			if w.OnlyIfAbsent {
				mode = modeAbsent
			}
			hashes[i] = hashWrite{key: s.inventoryKey(l.SKU), mode: mode, version: l.Version, seq: w.Seq, fields: []string{
				"on_hand", strconv.FormatInt(l.OnHand, 10),
				"reserved", strconv.FormatInt(l.Reserved, 10),
				"available", strconv.FormatInt(l.Available, 10)}}
		}
		err := execBatch(ctx, s.client, func(pipe redis.Pipeliner) {
			queueHashWrites(ctx, pipe, hashes, s.perCall)
		})
		if err != nil {
			return fmt.Errorf("redisstore: apply inventory: %w", err)
		}
	}
	return poison
}

// Inventory returns the stock of sku or projections.ErrNotFound.
func (s *InventoryStore) Inventory(ctx context.Context, sku string) (projections.InventoryView, error) {
	vals, err := s.client.HMGet(ctx, s.inventoryKey(sku), "on_hand", "reserved", "available", "version").Result()
	if err != nil {
		return projections.InventoryView{}, fmt.Errorf("redisstore: inventory %s: %w", sku, err)
	}
	if vals[0] == nil {
		return projections.InventoryView{}, projections.ErrNotFound
	}
	nums := make([]int64, len(vals))
	for i, v := range vals {
		str, _ := v.(string)
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil {
			return projections.InventoryView{}, fmt.Errorf("redisstore: inventory %s: field %d: %w", sku, i, err)
		}
		nums[i] = n
	}
	return projections.InventoryView{SKU: sku, OnHand: nums[0], Reserved: nums[1], Available: nums[2], Version: nums[3]}, nil
}

// Levels implements projections.StockLevelReader: one HGET per SKU, in one
// pipeline (a single SKU's without one, which costs more than the command).
func (s *InventoryStore) Levels(ctx context.Context, skus []string) ([]int64, error) {
	levels := make([]int64, len(skus))
	switch len(skus) {
	case 0:
		return levels, nil
	case 1:
		n, err := s.client.HGet(ctx, s.inventoryKey(skus[0]), "available").Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redisstore: stock level %s: %w", skus[0], err)
		}
		levels[0] = n
		return levels, nil
	}
	cmds := make([]*redis.StringCmd, len(skus))
	_, err := s.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = pipe.HGet(ctx, s.inventoryKey(sku), "available")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: stock levels: %w", err)
	}
	for i, cmd := range cmds {
		n, err := cmd.Int64()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, fmt.Errorf("redisstore: stock level %s: %w", skus[i], err)
		default:
			levels[i] = n
		}
	}
	return levels, nil
}

// AppliedVersion returns the inventory version the model shows for the sku
// aggregateID, 0 when it has none. Only "inventory" aggregates are kept here.
func (s *InventoryStore) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	if aggregateType != domain.AggregateInventory {
		return 0, fmt.Errorf("redisstore: the inventory model has no %q aggregates", aggregateType)
	}
	return hashVersion(ctx, s.client, s.inventoryKey(aggregateID))
}

// Mark records that this generation of the model exists (see Marked).
func (s *InventoryStore) Mark(ctx context.Context) error {
	return mark(ctx, s.client, markerKey(s.prefix, "inventory"))
}

// Marked reports whether Mark's record is there: false for a generation never
// marked, or one whose data Redis lost.
func (s *InventoryStore) Marked(ctx context.Context) (bool, error) {
	return marked(ctx, s.client, markerKey(s.prefix, "inventory"))
}

// Drop deletes every key of this generation of the model.
func (s *InventoryStore) Drop(ctx context.Context) error {
	if err := dropKeys(ctx, s.client, globEscape(s.prefix)+"inventory:*", globEscape(markerKey(s.prefix, "inventory"))); err != nil {
		return fmt.Errorf("redisstore: drop inventory %s: %w", s.prefix, err)
	}
	return nil
}
