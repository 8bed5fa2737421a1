package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	boltstore "github.com/jetcqrs/jetcqrs/projections/bbolt"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
)

// EmbeddedApplyConfig configures the embedded-apply benchmark.
type EmbeddedApplyConfig struct {
	// Dir holds the benchmark's files (default: a directory under the
	// system's temporary directory); it should be on the disk a read node
	// would use, since every commit is fsynced.
	Dir string
	// Duration is the time each side (store or raw baseline) of each read
	// model spends applying.
	Duration time.Duration
	// BatchSize is the events handed to one apply (default 256, the
	// runtime's batch size).
	BatchSize int
	Log       io.Writer
}

// partitionApplier applies every batch as partition 0's, checkpoint included,
// as a read node does.
type partitionApplier struct {
	store interface {
		ApplyPartition(ctx context.Context, partition int, events []projections.Envelope) error
	}
}

func (a partitionApplier) Apply(ctx context.Context, events []projections.Envelope) error {
	return a.store.ApplyPartition(ctx, 0, events)
}

// EmbeddedApply measures how fast the embedded (bbolt) read models apply the
// generated stream, each batch with its partition's checkpoint in the same
// transaction, against a raw baseline that puts the same records into
// another bbolt file of the same engine in one transaction per batch,
// without reading anything first. It returns the markdown section.
func EmbeddedApply(ctx context.Context, cfg EmbeddedApplyConfig) (string, error) {
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 256
	}
	dir, err := os.MkdirTemp(cfg.Dir, "jetcqrs-bench-bbolt-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)

	orders, err := boltstore.OpenOrders(filepath.Join(dir, "orders.db"))
	if err != nil {
		return "", err
	}
	defer orders.Close()
	stock, err := boltstore.OpenInventory(filepath.Join(dir, "inventory.db"))
	if err != nil {
		return "", err
	}
	defer stock.Close()
	sales, err := boltstore.OpenSales(filepath.Join(dir, "sales.db"))
	if err != nil {
		return "", err
	}
	defer sales.Close()
	raw, err := bolt.Open(filepath.Join(dir, "raw.db"), 0o600, nil)
	if err != nil {
		return "", err
	}
	defer raw.Close()

	const skus = 1000
	events := eventMix(40_000, skus, 1)
	models := []applyModel{
		boltOrdersModel(orders, raw),
		boltInventoryModel(stock, raw),
		boltSalesModel(sales, raw),
	}

	var out strings.Builder
	fmt.Fprintf(&out, "## Embedded apply: bbolt read models vs bare bbolt writes\n\n")
	fmt.Fprintf(&out, "`jetcqrs-bench embedded-apply` on %s. The stream of the projection-apply benchmark (%d events over\n", Machine(), len(events))
	fmt.Fprintf(&out, "%d SKUs), split the same way, in batches of %d, one at a time. Each store applies a batch as a read node does\n", skus, cfg.BatchSize)
	out.WriteString("(`ApplyPartition`: the version-guarded writes and the partition's checkpoint, in one fsynced transaction);\n")
	out.WriteString("the raw baseline puts the same records into another file of the same engine, one fsynced transaction per batch,\n")
	fmt.Fprintf(&out, "reading nothing first. The two alternate batch by batch until each has spent about %s applying; the stream\n", cfg.Duration)
	out.WriteString("is replayed with higher sequences and aggregate versions when it runs out, so every event is a real write.\n")
	out.WriteString("\"raw incl. decoding\" adds the raw side's decoding of the events, which the store does inside its apply.\n\n")
	out.WriteString("| read model | raw baseline | raw ev/s | raw batch p50 / p99 ms | raw incl. decoding ev/s | store ev/s | store batch p50 / p99 ms | store / raw | store / raw incl. decoding |\n")
	out.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	cpuBefore, _ := processCPU(os.Getpid())
	wallBefore := time.Now()
	for _, m := range models {
		batches := chunk(filterEvents(events, m.aggregateTypes, m.eventTypes...), cfg.BatchSize)
		rawStats, rawDecoding, store, err := applyBoth(ctx, m.name, cfg.Duration, batches, len(events), m, cfg.Log)
		if err != nil {
			return "", fmt.Errorf("%s: %w", m.name, err)
		}
		rl, sl := rawStats.rec.Result("raw", rawStats.busy), store.rec.Result("store", store.busy)
		fmt.Fprintf(&out, "| %s | %s | %.0f | %s / %s | %.0f | %.0f | %s / %s | %.2f | %.2f |\n", m.name, m.rawDoes,
			rawStats.rate(), ms(rl.P50), ms(rl.P99), rawDecoding.rate(), store.rate(), ms(sl.P50), ms(sl.P99),
			store.rate()/rawStats.rate(), store.rate()/rawDecoding.rate())
	}
	cpuAfter, _ := processCPU(os.Getpid())
	cpu, wall := cpuAfter-cpuBefore, time.Since(wallBefore)
	fmt.Fprintf(&out, "\nThe process used %.1f s of CPU in %.1f s (%.0f%% of one core): both sides spend most of a batch waiting\n",
		cpu.Seconds(), wall.Seconds(), 100*cpu.Seconds()/wall.Seconds())
	out.WriteString("for its fsync, so a ratio is mostly the pages each side dirties and syncs per batch. Besides the raw side's records,\n")
	out.WriteString("the stores read each key's version and write the partition's checkpoint; the sales model also rewrites its totals\n")
	out.WriteString("(the day's, and each SKU's and category's of that day, per order placed or cancelled), which the raw side does not keep.\n")
	return out.String(), nil
}

// rawPut is one bare write of the raw baseline.
type rawPut struct {
	bucket     string
	key, value []byte
}

// rawBolt is the raw baseline's apply: one transaction putting every write.
func rawBolt(db *bolt.DB) func(ctx context.Context, prepared any) error {
	return func(_ context.Context, prepared any) error {
		return db.Update(func(tx *bolt.Tx) error {
			for _, p := range prepared.([]rawPut) {
				b, err := tx.CreateBucketIfNotExists([]byte(p.bucket))
				if err != nil {
					return err
				}
				if err := b.Put(p.key, p.value); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// boltHeader is the version and sequence every record of the stores starts
// with.
func boltHeader(version int64, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(version)), seq)
}

func boltOrdersModel(store *boltstore.OrderStore, raw *bolt.DB) applyModel {
	return applyModel{
		name: "orders (bbolt)", aggregateTypes: []string{domain.AggregateOrder},
		store:   partitionApplier{store},
		rawDoes: "Put of the order record and its list entry",
		raw: applySide{
			prepare: func(batch []projections.Envelope) (any, error) {
				var puts []rawPut
				for _, e := range batch {
					var snap domain.OrderSnapshot
					if err := json.Unmarshal(e.Payload, &snap); err != nil {
						return nil, err
					}
					view := projections.OrderView{OrderID: snap.OrderID, UserID: snap.UserID, Status: string(snap.Status),
						Items: make([]projections.OrderLineView, 0, len(snap.Items)), TotalCents: snap.TotalCents,
						Version: snap.Version, PlacedAt: snap.PlacedAt.UTC(), UpdatedAt: snap.UpdatedAt.UTC()}
					for _, it := range snap.Items {
						view.Items = append(view.Items, projections.OrderLineView{SKU: it.SKU, Quantity: it.Quantity, PriceCents: it.PriceCents})
					}
					body, err := json.Marshal(view)
					if err != nil {
						return nil, err
					}
					record := binary.BigEndian.AppendUint16(boltHeader(snap.Version, e.Seq), uint16(len(snap.UserID)))
					record = append(append(record, snap.UserID...), body...)
					placed := snap.PlacedAt.UTC()
					member := fmt.Sprintf("%016x%03d|%s", uint64(placed.UnixMicro())^(1<<63), placed.Nanosecond()%1000, snap.OrderID)
					user := append(binary.AppendUvarint(nil, uint64(len(snap.UserID))), snap.UserID...)
					puts = append(puts, rawPut{"orders", []byte(snap.OrderID), record},
						rawPut{"user_orders", append(user, member...), nil})
				}
				return puts, nil
			},
			apply: rawBolt(raw),
		},
	}
}

func boltInventoryModel(store *boltstore.InventoryStore, raw *bolt.DB) applyModel {
	return applyModel{
		name: "inventory (bbolt)", aggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
		eventTypes: redisstore.InventoryEventTypes,
		store:      partitionApplier{store},
		rawDoes:    "Put of the stock record",
		raw: applySide{
			prepare: func(batch []projections.Envelope) (any, error) {
				var puts []rawPut
				for _, e := range batch {
					var l domain.InventoryLevels
					if e.EventType == domain.EventProductCreated {
						var p domain.ProductSnapshot
						if err := json.Unmarshal(e.Payload, &p); err != nil {
							return nil, err
						}
						l = domain.InventoryLevels{SKU: p.SKU}
					} else if err := json.Unmarshal(e.Payload, &l); err != nil {
						return nil, err
					}
					record := boltHeader(l.Version, e.Seq)
					for _, n := range []int64{l.OnHand, l.Reserved, l.Available} {
						record = binary.BigEndian.AppendUint64(record, uint64(n))
					}
					puts = append(puts, rawPut{"inventory", []byte(l.SKU), record})
				}
				return puts, nil
			},
			apply: rawBolt(raw),
		},
	}
}

func boltSalesModel(store *boltstore.SalesStore, raw *bolt.DB) applyModel {
	type line struct {
		SKU        string `json:"sku"`
		Category   string `json:"category"`
		Quantity   int64  `json:"quantity"`
		PriceCents int64  `json:"price_cents"`
	}
	type order struct {
		Version   int64  `json:"version"`
		Seq       uint64 `json:"seq"`
		Cancelled bool   `json:"cancelled"`
		PlacedUS  int64  `json:"placed_us"`
		Lines     []line `json:"lines"`
	}
	return applyModel{
		name: "sales (bbolt)", aggregateTypes: []string{domain.AggregateOrder}, eventTypes: chstore.EventTypes,
		store:   partitionApplier{store},
		rawDoes: "Put of the order record and its placed_at index entry, no totals",
		raw: applySide{
			prepare: func(batch []projections.Envelope) (any, error) {
				var puts []rawPut
				for _, e := range batch {
					var snap domain.OrderSnapshot
					if err := json.Unmarshal(e.Payload, &snap); err != nil {
						return nil, err
					}
					o := order{Version: snap.Version, Seq: e.Seq, Cancelled: e.EventType == domain.EventOrderCancelled,
						PlacedUS: snap.PlacedAt.UnixMicro()}
					for _, it := range snap.Items {
						o.Lines = append(o.Lines, line{SKU: it.SKU, Category: it.Category, Quantity: it.Quantity, PriceCents: it.PriceCents})
					}
					body, err := json.Marshal(o)
					if err != nil {
						return nil, err
					}
					at := binary.BigEndian.AppendUint64(nil, uint64(o.PlacedUS)^(1<<63))
					puts = append(puts, rawPut{"sales_orders", []byte(snap.OrderID), body})
					if !o.Cancelled {
						puts = append(puts, rawPut{"sales_by_time", append(at, snap.OrderID...), nil})
					}
				}
				return puts, nil
			},
			apply: rawBolt(raw),
		},
	}
}
