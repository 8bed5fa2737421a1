package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// OrderStore is the order summary read model. Under its prefix:
//
//	order:{order_id}         hash: seq, version, user, view (the OrderView as JSON)
//	user:{user_id}:orders    sorted set of the user's orders, all at score 0,
//	                         members "<placed_at key>|<order_id>", so that the
//	                         lexicographic order is (placed_at, order_id)
//
// An order's list member never changes (placed_at does not), so it is written
// with a plain ZADD beside the script, idempotent by itself; keeping it out of
// the script lets Redis Cluster run each script call on one key's slot.
type OrderStore struct {
	client  redis.UniversalClient
	prefix  string
	perCall int // keys per applyScript call
}

var (
	_ projections.Applier       = (*OrderStore)(nil)
	_ projections.OrderReader   = (*OrderStore)(nil)
	_ projections.VersionReader = (*OrderStore)(nil)
)

// NewOrderStore returns the order summary model stored under prefix, which
// names the generation, such as "jetcqrs:g1:".
func NewOrderStore(client redis.UniversalClient, prefix string) *OrderStore {
	return &OrderStore{client: client, prefix: prefix, perCall: keysPerCall(client)}
}

func (s *OrderStore) orderKey(id string) string { return s.prefix + "order:" + id }

func (s *OrderStore) userOrdersKey(userID string) string {
	return s.prefix + "user:" + userID + ":orders"
}

// Apply writes the snapshot every order event carries into order:{id} when the
// event's order version is above the one the key holds, and keeps the order in its user's
// list. Events of other aggregates are ignored. The batch is one pipeline.
func (s *OrderStore) Apply(ctx context.Context, events []projections.Envelope) error {
	writes := make([]projections.OrderChange, 0, len(events))
	var poison error
	for _, e := range events {
		w, ok, err := projections.DecodeOrderEvent(e)
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
		lists := map[string][]redis.Z{}
		for i, w := range writes {
			hashes[i] = hashWrite{key: s.orderKey(w.OrderID), mode: modeNewer, version: w.Version, seq: w.Seq,
				fields: []string{"user", w.UserID, "view", string(w.View)}}
			list := s.userOrdersKey(w.UserID)
			lists[list] = append(lists[list], redis.Z{Score: 0, Member: w.Member})
		}
		err := execBatch(ctx, s.client, func(pipe redis.Pipeliner) {
			queueHashWrites(ctx, pipe, hashes, s.perCall)
			for list, members := range lists {
				pipe.ZAdd(ctx, list, members...)
			}
		})
		if err != nil {
			return fmt.Errorf("redisstore: apply orders: %w", err)
		}
	}
	return poison
}

// Order returns the order or projections.ErrNotFound.
func (s *OrderStore) Order(ctx context.Context, id string) (projections.OrderView, error) {
	raw, err := s.client.HGet(ctx, s.orderKey(id), "view").Bytes()
	if errors.Is(err, redis.Nil) {
		return projections.OrderView{}, projections.ErrNotFound
	}
	if err != nil {
		return projections.OrderView{}, fmt.Errorf("redisstore: order %s: %w", id, err)
	}
	var v projections.OrderView
	if err := json.Unmarshal(raw, &v); err != nil {
		return projections.OrderView{}, fmt.Errorf("redisstore: order %s: decode: %w", id, err)
	}
	return v, nil
}

// OrderJSON returns the order's user and stored view in one round trip.
func (s *OrderStore) OrderJSON(ctx context.Context, id string) (string, []byte, error) {
	vals, err := s.client.HMGet(ctx, s.orderKey(id), "user", "view").Result()
	if err != nil {
		return "", nil, fmt.Errorf("redisstore: order %s: %w", id, err)
	}
	user, _ := vals[0].(string)
	view, ok := vals[1].(string)
	if !ok {
		return "", nil, projections.ErrNotFound
	}
	if user == "" { // written before the user field was
		var v struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal([]byte(view), &v); err != nil {
			return "", nil, fmt.Errorf("redisstore: order %s: decode: %w", id, err)
		}
		user = v.UserID
	}
	return user, []byte(view), nil
}

// UserOrders returns up to limit orders of userID, newest first, after cursor.
// Two round trips: the page of the user's list, then the orders on it.
func (s *OrderStore) UserOrders(ctx context.Context, userID string, limit int, cursor string) ([]projections.OrderListEntry, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("redisstore: user orders: limit %d is not positive", limit)
	}
	upper := "+"
	if cursor != "" {
		member, ok := projections.DecodeOrderCursor(cursor)
		if !ok {
			return nil, "", &projections.InvalidCursorError{Cursor: cursor}
		}
		upper = "(" + member
	}
	members, err := s.client.ZRevRangeByLex(ctx, s.userOrdersKey(userID), &redis.ZRangeBy{
		Max: upper, Min: "-", Count: int64(limit) + 1,
	}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("redisstore: user %s orders: %w", userID, err)
	}
	next := ""
	if len(members) > limit {
		members = members[:limit]
		next = projections.EncodeOrderCursor(members[limit-1])
	}
	entries := make([]projections.OrderListEntry, 0, len(members))
	if len(members) == 0 {
		return entries, next, nil
	}

	cmds := make([]*redis.StringCmd, len(members))
	if _, err := s.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = pipe.HGet(ctx, s.orderKey(m[projections.OrderMemberIDOffset:]), "view")
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", fmt.Errorf("redisstore: user %s orders: %w", userID, err)
	}
	for _, cmd := range cmds {
		raw, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			// Listed by a pipeline whose order write is not visible yet.
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("redisstore: user %s orders: %w", userID, err)
		}
		var v projections.OrderView
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, "", fmt.Errorf("redisstore: user %s orders: decode: %w", userID, err)
		}
		entries = append(entries, projections.OrderListEntry{
			OrderID: v.OrderID, Status: v.Status, TotalCents: v.TotalCents, PlacedAt: v.PlacedAt,
		})
	}
	return entries, next, nil
}

// AppliedVersion returns the version of the order the model shows, 0 when it
// has none. Only "order" aggregates are kept here.
func (s *OrderStore) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	if aggregateType != domain.AggregateOrder {
		return 0, fmt.Errorf("redisstore: the order model has no %q aggregates", aggregateType)
	}
	return hashVersion(ctx, s.client, s.orderKey(aggregateID))
}

// Mark records that this generation of the model exists (see Marked).
func (s *OrderStore) Mark(ctx context.Context) error {
	return mark(ctx, s.client, markerKey(s.prefix, "orders"))
}

// Marked reports whether Mark's record is there: false for a generation never
// marked, or one whose data Redis lost.
func (s *OrderStore) Marked(ctx context.Context) (bool, error) {
	return marked(ctx, s.client, markerKey(s.prefix, "orders"))
}

// Drop deletes every key of this generation of the model.
func (s *OrderStore) Drop(ctx context.Context) error {
	p := globEscape(s.prefix)
	if err := dropKeys(ctx, s.client, p+"order:*", p+"user:*", globEscape(markerKey(s.prefix, "orders"))); err != nil {
		return fmt.Errorf("redisstore: drop orders %s: %w", s.prefix, err)
	}
	return nil
}

// hashVersion reads the version field of a read-model hash, 0 when absent.
func hashVersion(ctx context.Context, client redis.UniversalClient, key string) (int64, error) {
	v, err := client.HGet(ctx, key, "version").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("redisstore: version of %s: %w", key, err)
	}
	return v, nil
}
