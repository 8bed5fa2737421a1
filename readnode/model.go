package readnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	boltstore "github.com/jetcqrs/jetcqrs/projections/bbolt"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
)

// The models a read node can keep itself.
const (
	Catalog   = "catalog"
	Orders    = "orders"
	Inventory = "inventory"
	Sales     = "sales"
)

// specs are the local models' places in the stream, as the projectors'
// (cmd/jetcqrs modelSpecs) read them.
var specs = map[string]lifecycle.Spec{
	Orders: {Name: Orders, AggregateTypes: []string{domain.AggregateOrder}},
	Inventory: {Name: Inventory, AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
		EventTypes: redisstore.InventoryEventTypes},
	Catalog: {Name: Catalog, AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
		CommitInterval: projections.CatalogCommitInterval},
	Sales: {Name: Sales, AggregateTypes: []string{domain.AggregateOrder}, EventTypes: chstore.EventTypes,
		CommitInterval: projections.SalesCommitInterval},
}

// lockTimeout bounds the wait for a file another process holds open.
const lockTimeout = 2 * time.Second

// wholeStream is the partition under which a bbolt model of a read node
// records its checkpoint: the node reads the whole stream in one ordered
// consumer per model, so one position covers every partition. It is beyond
// any real partition number.
const wholeStream = 1 << 20

// store is one generation of one local model: its data and, kept with it
// atomically, the last stream sequence it applied.
type store interface {
	projections.Applier
	// applyThrough applies events and records the last one's sequence as
	// the checkpoint, in the same transaction.
	applyThrough(ctx context.Context, events []projections.Envelope) error
	// advance records seq as the checkpoint without applying anything.
	advance(ctx context.Context, seq uint64) error
	checkpoint(ctx context.Context) (uint64, error)
	close()
}

type boltModel interface {
	projections.Applier
	ApplyPartition(ctx context.Context, partition int, events []projections.Envelope) error
	Advance(ctx context.Context, partition int, seq uint64) error
	Checkpoint(ctx context.Context, partition int) (uint64, error)
	Close() error
}

type boltStore struct{ boltModel }

func (b boltStore) applyThrough(ctx context.Context, events []projections.Envelope) error {
	return b.ApplyPartition(ctx, wholeStream, events)
}
func (b boltStore) advance(ctx context.Context, seq uint64) error {
	return b.Advance(ctx, wholeStream, seq)
}
func (b boltStore) checkpoint(ctx context.Context) (uint64, error) {
	return b.Checkpoint(ctx, wholeStream)
}
func (b boltStore) close() { _ = b.Close() }

type catalogStore struct{ *blevestore.CatalogStore }

func (c catalogStore) applyThrough(ctx context.Context, events []projections.Envelope) error {
	if len(events) == 0 {
		return nil
	}
	return c.ApplyThrough(ctx, events, events[len(events)-1].Seq)
}
func (c catalogStore) advance(ctx context.Context, seq uint64) error {
	return c.ApplyThrough(ctx, nil, seq)
}
func (c catalogStore) checkpoint(ctx context.Context) (uint64, error) { return c.Checkpoint(ctx) }
func (c catalogStore) close()                                         { _ = c.Close() }

// path is where generation gen of the named model lives in dir.
func path(dir, name string, gen int) string {
	g := lifecycle.GenerationName(gen)
	if name == Catalog {
		return filepath.Join(dir, "catalog", g)
	}
	return filepath.Join(dir, name, g+".db")
}

// openStore opens generation gen of the named model in dir; fresh deletes
// what it holds first.
func openStore(dir, name string, gen int, fresh bool, cache *blevestore.SearchCacheMetrics) (store, error) {
	p := path(dir, name, gen)
	if fresh {
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("readnode: %s %s: %w", name, lifecycle.GenerationName(gen), err)
		}
	}
	switch name {
	case Catalog:
		s, err := blevestore.Open(p, blevestore.WithLockTimeout(lockTimeout),
			blevestore.WithSearchCache(blevestore.DefaultSearchCacheEntries, cache))
		if err != nil {
			return nil, err
		}
		return catalogStore{s}, nil
	case Orders:
		s, err := boltstore.OpenOrders(p)
		if err != nil {
			return nil, err
		}
		return boltStore{s}, nil
	case Inventory:
		s, err := boltstore.OpenInventory(p)
		if err != nil {
			return nil, err
		}
		return boltStore{s}, nil
	case Sales:
		s, err := boltstore.OpenSales(p)
		if err != nil {
			return nil, err
		}
		return boltStore{s}, nil
	}
	return nil, fmt.Errorf("readnode: no local model %q", name)
}

// dropStore deletes generation gen of the named model from dir.
func dropStore(dir, name string, gen int) error {
	return os.RemoveAll(path(dir, name, gen))
}
