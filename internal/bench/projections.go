package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/index/scorch"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
)

// ProjectionApplyConfig configures the projection-apply benchmark.
type ProjectionApplyConfig struct {
	RedisURL string
	// ClickHouseURL is clickhouse://host:port/database; the benchmark
	// creates and drops a scratch database beside that one.
	ClickHouseURL string
	// Duration is the time each side (store or raw baseline) of each read
	// model spends applying.
	Duration time.Duration
	// BatchSize is the events handed to one Apply, as the runtime does
	// (default 256, the runtime's default).
	BatchSize int
	Log       io.Writer
}

// applySide is a raw baseline: prepare decodes a batch into the writes,
// apply writes them with the bare client.
type applySide struct {
	prepare func(batch []projections.Envelope) (any, error)
	apply   func(ctx context.Context, prepared any) error
}

// applyModel is a read model with its store and its raw baseline.
type applyModel struct {
	name           string
	aggregateTypes []string
	eventTypes     []string // nil: all of aggregateTypes
	store          projections.Applier
	raw            applySide
	rawDoes        string // what the raw baseline does, for the report
}

// ProjectionApply measures how fast each read-model store applies a
// realistic stream of events, batch by batch as the projection runtime hands
// them over, against a raw baseline doing the same writes with the bare
// client library, in the same run. It returns the markdown section.
func ProjectionApply(ctx context.Context, cfg ProjectionApplyConfig) (string, error) {
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 256
	}
	const scratch = "jetcqrs_bench_projection_apply"

	prefix := scratch + ":"
	rdb, dropRedis, err := scratchRedis(ctx, cfg.RedisURL, prefix)
	if err != nil {
		return "", err
	}
	defer dropRedis()

	ch, dropCH, err := scratchClickHouse(ctx, cfg.ClickHouseURL, scratch)
	if err != nil {
		return "", err
	}
	defer dropCH()

	dir, err := os.MkdirTemp("", "jetcqrs-bench-bleve-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	catalog, err := blevestore.Open(dir + "/store")
	if err != nil {
		return "", err
	}
	defer catalog.Close()
	rawIndex, err := bleve.NewUsing(dir+"/raw", blevestore.Mapping(), scorch.Name, scorch.Name, nil)
	if err != nil {
		return "", err
	}
	defer rawIndex.Close()

	sales, err := chstore.NewSalesStore(ch, "g1")
	if err != nil {
		return "", err
	}
	rawSales, err := chstore.NewSalesStore(ch, "raw")
	if err != nil {
		return "", err
	}
	for _, s := range []*chstore.SalesStore{sales, rawSales} {
		if err := s.EnsureSchema(ctx); err != nil {
			return "", err
		}
	}

	const skus = 1000
	events := eventMix(40_000, skus, 1)
	models := []applyModel{
		redisOrdersModel(rdb, prefix),
		redisInventoryModel(rdb, prefix),
		bleveCatalogModel(catalog, rawIndex),
		clickHouseSalesModel(sales, ch, "`"+rawSales.Table()+"`"),
	}

	var out strings.Builder
	fmt.Fprintf(&out, "## Projection apply: read-model stores vs bare client writes\n\n")
	fmt.Fprintf(&out, "`jetcqrs-bench projection-apply` on %s. A generated stream of %d events over %d SKUs\n", Machine(), len(events), skus)
	out.WriteString("(products created and repriced, stock adjusted, orders placed with 1–3 lines and their reservations, then paid,\n")
	out.WriteString("shipped, delivered or cancelled with releases) is split as the runtime's consumers split it: each store gets\n")
	fmt.Fprintf(&out, "its projection's aggregate types, in stream order, in batches of %d (the runtime's batch size), one Apply at a\n", cfg.BatchSize)
	fmt.Fprintf(&out, "time. The raw baseline and the store alternate batch by batch until each has spent about %s applying; the\n", cfg.Duration)
	out.WriteString("stream is replayed with higher sequences and aggregate versions when it runs out, so every event is a real write. events/s = events /\n")
	out.WriteString("time inside Apply (or the raw batch). The raw side decodes each batch into its writes before its clock starts;\n")
	out.WriteString("\"raw incl. decoding\" counts that decoding too, so the last two ratios separate what the store pays for its\n")
	out.WriteString("idempotency (Lua guard, read-modify-write) from what it pays for decoding the events.\n\n")
	out.WriteString("| read model | raw baseline | raw ev/s | raw batch p50 / p99 ms | raw incl. decoding ev/s | store ev/s | store batch p50 / p99 ms | store / raw | store / raw incl. decoding |\n")
	out.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var strict, fair []string
	for _, m := range models {
		batches := chunk(filterEvents(events, m.aggregateTypes, m.eventTypes...), cfg.BatchSize)
		raw, rawDecoding, store, err := applyBoth(ctx, m.name, cfg.Duration, batches, len(events), m, cfg.Log)
		if err != nil {
			return "", fmt.Errorf("%s: %w", m.name, err)
		}
		rl, sl := raw.rec.Result("raw", raw.busy), store.rec.Result("store", store.busy)
		fmt.Fprintf(&out, "| %s | %s | %.0f | %s / %s | %.0f | %.0f | %s / %s | %.2f | %.2f |\n", m.name, m.rawDoes,
			raw.rate(), ms(rl.P50), ms(rl.P99), rawDecoding.rate(), store.rate(), ms(sl.P50), ms(sl.P99),
			store.rate()/raw.rate(), store.rate()/rawDecoding.rate())
		if strings.Contains(m.name, "Redis") {
			if r := store.rate() / raw.rate(); r < 0.5 {
				strict = append(strict, fmt.Sprintf("%s %.2f", m.name, r))
			}
			if r := store.rate() / rawDecoding.rate(); r < 0.5 {
				fair = append(fair, fmt.Sprintf("%s %.2f", m.name, r))
			}
		}
	}
	fmt.Fprintf(&out, "\nTarget (≥ 0.5× raw for the Redis models): against the raw side with its decoding, which does the same work\n"+
		"as the store, %s; against the bare writes alone, %s.\n", verdict(fair), verdict(strict))
	return out.String(), nil
}

// applyStats is what one side of a read model did: time spent applying,
// events applied and per-batch latencies.
type applyStats struct {
	busy   time.Duration
	events int64
	rec    *Recorder
}

func (s *applyStats) add(took time.Duration, events int) {
	s.busy += took
	s.events += int64(events)
	s.rec.Observe(took)
}

func (s *applyStats) rate() float64 { return float64(s.events) / s.busy.Seconds() }

// applyBoth applies batches in order through the raw baseline and the store,
// alternating batch by batch (and which side goes first) so that both see
// the same machine, until each side has spent about d applying. When the
// batches run out they are replayed with sequences and aggregate versions
// shifted by seqSpan (no aggregate has more versions than the stream has
// events), so that the stores' version guards let every event write. raw
// times the raw writes only; rawDecoding adds the raw side's decoding.
func applyBoth(ctx context.Context, label string, d time.Duration, batches [][]projections.Envelope, seqSpan int,
	m applyModel, log io.Writer) (raw, rawDecoding, store applyStats, err error) {
	raw, rawDecoding, store = applyStats{rec: NewRecorder()}, applyStats{rec: NewRecorder()}, applyStats{rec: NewRecorder()}
	var done atomic.Int64
	stop := Progress(log, label, 5*time.Second, done.Load)
	defer stop()
	n := 0
	for pass := 0; raw.busy+store.busy < 2*d || n == 0; pass++ {
		for _, b := range batches {
			if raw.busy+store.busy >= 2*d && n > 0 {
				break
			}
			if err := ctx.Err(); err != nil {
				return raw, rawDecoding, store, err
			}
			shifted := make([]projections.Envelope, len(b))
			for i, e := range b {
				if shifted[i], err = shiftEvent(e, pass*seqSpan); err != nil {
					return raw, rawDecoding, store, err
				}
			}
			runRaw := func() error {
				start := time.Now()
				prepared, err := m.raw.prepare(shifted)
				if err != nil {
					return err
				}
				decoded := time.Now()
				if err := m.raw.apply(ctx, prepared); err != nil {
					return err
				}
				raw.add(time.Since(decoded), len(b))
				rawDecoding.add(time.Since(start), len(b))
				return nil
			}
			runStore := func() error {
				start := time.Now()
				if err := m.store.Apply(ctx, shifted); err != nil {
					return err
				}
				store.add(time.Since(start), len(b))
				return nil
			}
			first, second := runRaw, runStore
			if n%2 == 1 {
				first, second = runStore, runRaw
			}
			if err := first(); err != nil {
				return raw, rawDecoding, store, err
			}
			if err := second(); err != nil {
				return raw, rawDecoding, store, err
			}
			n++
			done.Add(int64(len(b)))
		}
	}
	fmt.Fprintf(log, "%s: %d batches of up to %d events; raw %.0f events/s (%.0f with decoding), store %.0f events/s\n",
		label, n, len(batches[0]), raw.rate(), rawDecoding.rate(), store.rate())
	return raw, rawDecoding, store, nil
}

// shiftEvent is e with its sequence and its aggregate version, in the
// envelope and in the snapshot its payload carries at the top level, raised
// by by.
func shiftEvent(e projections.Envelope, by int) (projections.Envelope, error) {
	if by == 0 {
		return e, nil
	}
	e.Seq += uint64(by)
	e.AggregateVersion += int64(by)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(e.Payload, &fields); err != nil {
		return e, fmt.Errorf("shift event %d: %w", e.Seq, err)
	}
	var version int64
	if err := json.Unmarshal(fields["version"], &version); err != nil {
		return e, fmt.Errorf("shift event %d: version: %w", e.Seq, err)
	}
	fields["version"] = json.RawMessage(strconv.FormatInt(version+int64(by), 10))
	payload, err := json.Marshal(fields)
	if err != nil {
		return e, fmt.Errorf("shift event %d: %w", e.Seq, err)
	}
	e.Payload = payload
	return e, nil
}

func redisOrdersModel(rdb *redis.Client, prefix string) applyModel {
	storePrefix, rawPrefix := prefix+"store:", prefix+"raw:"
	type write struct {
		key, listKey, member, seq, version, user string
		view                                     []byte
	}
	return applyModel{
		name: "orders (Redis)", aggregateTypes: []string{domain.AggregateOrder},
		store:   (redisstore.NewOrderStore(rdb, storePrefix)),
		rawDoes: "pipelined HSET + ZADD, no Lua guard",
		raw: applySide{
			prepare: func(batch []projections.Envelope) (any, error) {
				var ws []write
				for _, e := range batch {
					var snap domain.OrderSnapshot
					if err := json.Unmarshal(e.Payload, &snap); err != nil {
						return nil, err
					}
					view := projections.OrderView{OrderID: snap.OrderID, UserID: snap.UserID, Status: string(snap.Status),
						TotalCents: snap.TotalCents, Version: snap.Version, PlacedAt: snap.PlacedAt.UTC(), UpdatedAt: snap.UpdatedAt.UTC()}
					for _, it := range snap.Items {
						view.Items = append(view.Items, projections.OrderLineView{SKU: it.SKU, Quantity: it.Quantity, PriceCents: it.PriceCents})
					}
					body, err := json.Marshal(view)
					if err != nil {
						return nil, err
					}
					placed := snap.PlacedAt.UTC()
					ws = append(ws, write{key: rawPrefix + "order:" + snap.OrderID, listKey: rawPrefix + "user:" + snap.UserID + ":orders",
						member: fmt.Sprintf("%016x%03d|%s", uint64(placed.UnixMicro())^(1<<63), placed.Nanosecond()%1000, snap.OrderID),
						seq:    strconv.FormatUint(e.Seq, 10), version: strconv.FormatInt(snap.Version, 10), user: snap.UserID, view: body})
				}
				return ws, nil
			},
			apply: func(ctx context.Context, p any) error {
				_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
					for _, w := range p.([]write) {
						pipe.HSet(ctx, w.key, "seq", w.seq, "version", w.version, "user", w.user, "view", w.view)
						pipe.ZAdd(ctx, w.listKey, redis.Z{Member: w.member})
					}
					return nil
				})
				return err
			},
		},
	}
}

func redisInventoryModel(rdb *redis.Client, prefix string) applyModel {
	storePrefix, rawPrefix := prefix+"store:", prefix+"raw:"
	type write struct {
		key    string
		fields []any
	}
	return applyModel{
		name: "inventory (Redis)", aggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
		eventTypes: redisstore.InventoryEventTypes,
		store:      (redisstore.NewInventoryStore(rdb, storePrefix)),
		rawDoes:    "pipelined HSET, no Lua guard",
		raw: applySide{
			prepare: func(batch []projections.Envelope) (any, error) {
				var ws []write
				for _, e := range batch {
					var l domain.InventoryLevels
					seq := e.Seq
					switch e.EventType {
					case domain.EventProductCreated:
						var p domain.ProductSnapshot
						if err := json.Unmarshal(e.Payload, &p); err != nil {
							return nil, err
						}
						l, seq = domain.InventoryLevels{SKU: p.SKU}, 0
					case domain.EventInventoryAdjusted, domain.EventInventoryReserved, domain.EventInventoryReleased, domain.EventInventoryShipped:
						if err := json.Unmarshal(e.Payload, &l); err != nil {
							return nil, err
						}
					default:
						continue
					}
					ws = append(ws, write{key: rawPrefix + "inventory:" + l.SKU, fields: []any{"seq", strconv.FormatUint(seq, 10),
						"on_hand", strconv.FormatInt(l.OnHand, 10), "reserved", strconv.FormatInt(l.Reserved, 10),
						"available", strconv.FormatInt(l.Available, 10), "version", strconv.FormatInt(l.Version, 10)}})
				}
				return ws, nil
			},
			apply: func(ctx context.Context, p any) error {
				_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
					for _, w := range p.([]write) {
						pipe.HSet(ctx, w.key, w.fields...)
					}
					return nil
				})
				return err
			},
		},
	}
}

func bleveCatalogModel(store *blevestore.CatalogStore, raw bleve.Index) applyModel {
	docs := map[string]*projections.CatalogDoc{} // what the raw index holds, kept in memory
	type write struct {
		id     string
		fields map[string]any
	}
	return applyModel{
		name: "catalog (Bleve)", aggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
		store:   (store),
		rawDoes: "one Bleve batch of the changed documents",
		raw: applySide{
			prepare: func(batch []projections.Envelope) (any, error) {
				changed := map[string]bool{}
				for _, e := range batch {
					d := docs[e.AggregateID]
					if d == nil {
						d = &projections.CatalogDoc{SKU: e.AggregateID}
						docs[e.AggregateID] = d
					}
					if e.AggregateType == domain.AggregateProduct {
						var p domain.ProductSnapshot
						if err := json.Unmarshal(e.Payload, &p); err != nil {
							return nil, err
						}
						d.HasProduct, d.Name, d.Description, d.Category = true, p.Name, p.Description, p.Category
						d.PriceCents, d.Version, d.Attributes, d.ProductSeq = p.PriceCents, p.Version, p.Attributes, e.Seq
					} else {
						var l domain.InventoryLevels
						if err := json.Unmarshal(e.Payload, &l); err != nil {
							return nil, err
						}
						if (l.Available > 0) == d.InStock {
							continue // the catalog keeps only the flag
						}
						d.InStock, d.InventoryVersion, d.InventorySeq = l.Available > 0, l.Version, e.Seq
					}
					changed[e.AggregateID] = true
				}
				ws := make([]write, 0, len(changed))
				for sku := range changed {
					d := docs[sku]
					source, err := json.Marshal(d)
					if err != nil {
						return nil, err
					}
					ws = append(ws, write{id: sku, fields: map[string]any{"name": d.Name, "description": d.Description,
						"category": d.Category, "price_cents": d.PriceCents, "in_stock": d.InStock,
						"has_product": d.HasProduct, "source": string(source)}})
				}
				return ws, nil
			},
			apply: func(_ context.Context, p any) error {
				b := raw.NewBatch()
				for _, w := range p.([]write) {
					if err := b.Index(w.id, w.fields); err != nil {
						return err
					}
				}
				return raw.Batch(b)
			},
		},
	}
}

// salesRow is one row of the sales table, in its column order.
type salesRow struct {
	orderID    string
	lineNo     uint16
	sku, cat   string
	day, at    time.Time
	atMicros   int64
	qty, price int64
	cancelled  uint8
	version    uint64
}

const salesColumns = " (order_id, line_no, sku, category, day, placed_at, placed_at_us, quantity, price_cents, cancelled, version)"

func clickHouseSalesModel(store *chstore.SalesStore, ch driver.Conn, rawTable string) applyModel {
	return applyModel{
		name: "sales (ClickHouse)", aggregateTypes: []string{domain.AggregateOrder}, eventTypes: chstore.EventTypes,
		store:   (store),
		rawDoes: "one native batch INSERT of the same rows",
		raw: applySide{
			prepare: func(batch []projections.Envelope) (any, error) {
				var rows []salesRow
				for _, e := range batch {
					var cancelled uint8
					switch e.EventType {
					case domain.EventOrderPlaced:
					case domain.EventOrderCancelled:
						cancelled = 1
					default:
						continue
					}
					var snap domain.OrderSnapshot
					if err := json.Unmarshal(e.Payload, &snap); err != nil {
						return nil, err
					}
					at := snap.PlacedAt.UTC()
					day := time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
					for i, it := range snap.Items {
						rows = append(rows, salesRow{orderID: snap.OrderID, lineNo: uint16(i), sku: it.SKU, cat: it.Category,
							day: day, at: at.Truncate(time.Second), atMicros: at.UnixMicro(), qty: it.Quantity,
							price: it.PriceCents, cancelled: cancelled, version: uint64(snap.Version)})
					}
				}
				return rows, nil
			},
			apply: func(ctx context.Context, p any) error {
				rows := p.([]salesRow)
				if len(rows) == 0 {
					return nil
				}
				b, err := ch.PrepareBatch(ctx, "INSERT INTO "+rawTable+salesColumns)
				if err != nil {
					return err
				}
				defer b.Close()
				for _, r := range rows {
					if err := b.Append(r.orderID, r.lineNo, r.sku, r.cat, r.day, r.at, r.atMicros, r.qty, r.price, r.cancelled, r.version); err != nil {
						return err
					}
				}
				return b.Send()
			},
		},
	}
}

// eventMix generates n events of a shop with skus products: each product
// created with stock, then orders placed (1–3 lines, each reserving stock),
// paid, shipped (stock leaves) and delivered, or cancelled (stock released),
// interleaved as concurrent customers would, with occasional repricing and
// restocking. Sequences run from 1 in stream order.
func eventMix(n, skus int, seed uint64) []projections.Envelope {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	now := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	var out []projections.Envelope
	versions := map[string]int64{}
	emit := func(aggType, aggID, evType string, payload any) int64 {
		key := aggType + "/" + aggID
		versions[key]++
		body, err := json.Marshal(payload)
		if err != nil {
			panic(err) // generated values always encode
		}
		now = now.Add(time.Millisecond)
		out = append(out, projections.Envelope{Seq: uint64(len(out) + 1), ID: uuid.NewString(), AggregateType: aggType,
			AggregateID: aggID, AggregateVersion: versions[key], EventType: evType, SchemaVersion: domain.CurrentSchemaVersion,
			OccurredAt: now, Payload: body})
		return versions[key]
	}
	products := make([]domain.ProductSnapshot, skus)
	stock := make([]domain.InventoryLevels, skus)
	for i := range products {
		sku := fmt.Sprintf("SKU-%05d", i)
		products[i] = domain.ProductSnapshot{SKU: sku, Name: fmt.Sprintf("Product %d", i),
			Description: "A sturdy everyday product, number " + strconv.Itoa(i) + ", made to last",
			Category:    fmt.Sprintf("cat-%d", i%12), PriceCents: int64(199 + rng.IntN(60000)),
			Attributes: map[string]string{"color": []string{"red", "blue", "black"}[i%3]}, CreatedAt: now, UpdatedAt: now}
		products[i].Version = emit(domain.AggregateProduct, sku, domain.EventProductCreated, domain.ProductCreated{ProductSnapshot: products[i]})
		stock[i] = domain.InventoryLevels{SKU: sku, OnHand: 100000, Available: 100000}
		stock[i].Version = versions[domain.AggregateInventory+"/"+sku] + 1
		emit(domain.AggregateInventory, sku, domain.EventInventoryAdjusted,
			domain.InventoryAdjusted{InventoryLevels: stock[i], Delta: 100000, Reason: "initial stock"})
	}
	move := func(i int, evType string, orderID string, qty, onHand, reserved int64) {
		s := &stock[i]
		s.OnHand, s.Reserved = s.OnHand+onHand, s.Reserved+reserved
		s.Available = s.OnHand - s.Reserved
		s.Version = versions[domain.AggregateInventory+"/"+s.SKU] + 1
		switch evType {
		case domain.EventInventoryReserved:
			emit(domain.AggregateInventory, s.SKU, evType, domain.InventoryReserved{InventoryLevels: *s, OrderID: orderID, Quantity: qty})
		case domain.EventInventoryReleased:
			emit(domain.AggregateInventory, s.SKU, evType, domain.InventoryReleased{InventoryLevels: *s, OrderID: orderID,
				Quantity: qty, Reason: domain.InventoryReasonCanceled})
		case domain.EventInventoryShipped:
			emit(domain.AggregateInventory, s.SKU, evType, domain.InventoryShipped{InventoryLevels: *s, OrderID: orderID, Quantity: qty})
		}
	}
	type openOrder struct {
		snap  domain.OrderSnapshot
		lines []int
	}
	var open []*openOrder
	for len(out) < n {
		r := rng.Float64()
		switch {
		case r < 0.02:
			i := rng.IntN(skus)
			p := &products[i]
			p.PriceCents, p.UpdatedAt, p.Version = int64(199+rng.IntN(60000)), now, p.Version+1
			emit(domain.AggregateProduct, p.SKU, domain.EventProductUpdated, domain.ProductUpdated{ProductSnapshot: *p})
		case r < 0.03:
			i := rng.IntN(skus)
			s := &stock[i]
			s.OnHand += 500
			s.Available = s.OnHand - s.Reserved
			s.Version = versions[domain.AggregateInventory+"/"+s.SKU] + 1
			emit(domain.AggregateInventory, s.SKU, domain.EventInventoryAdjusted,
				domain.InventoryAdjusted{InventoryLevels: *s, Delta: 500, Reason: "restock"})
		case r < 0.45 || len(open) == 0:
			o := &openOrder{snap: domain.OrderSnapshot{OrderID: uuid.NewString(), UserID: fmt.Sprintf("user-%d", rng.IntN(5000)),
				Status: domain.StatusPlaced, PaymentMethod: "card", Version: 1, PlacedAt: now, UpdatedAt: now}}
			for len(o.lines) < 1+rng.IntN(3) {
				i := rng.IntN(skus)
				dup := false
				for _, l := range o.lines {
					dup = dup || l == i
				}
				if dup {
					continue
				}
				o.lines = append(o.lines, i)
				q := int64(1 + rng.IntN(2))
				o.snap.Items = append(o.snap.Items, domain.OrderLine{SKU: products[i].SKU, Name: products[i].Name,
					Category: products[i].Category, Quantity: q, PriceCents: products[i].PriceCents})
				o.snap.TotalCents += q * products[i].PriceCents
			}
			emit(domain.AggregateOrder, o.snap.OrderID, domain.EventOrderPlaced, domain.OrderPlaced{OrderSnapshot: o.snap})
			for k, i := range o.lines {
				move(i, domain.EventInventoryReserved, o.snap.OrderID, o.snap.Items[k].Quantity, 0, o.snap.Items[k].Quantity)
			}
			open = append(open, o)
		default:
			j := rng.IntN(len(open))
			o := open[j]
			o.snap.Version++
			o.snap.UpdatedAt = now
			closeOrder := false
			switch o.snap.Status {
			case domain.StatusPlaced:
				if rng.IntN(8) == 0 {
					prev := o.snap.Status
					o.snap.Status = domain.StatusCancelled
					emit(domain.AggregateOrder, o.snap.OrderID, domain.EventOrderCancelled,
						domain.OrderCancelled{OrderSnapshot: o.snap, Reason: "customer request", PreviousStatus: prev})
					for k, i := range o.lines {
						move(i, domain.EventInventoryReleased, o.snap.OrderID, o.snap.Items[k].Quantity, 0, -o.snap.Items[k].Quantity)
					}
					closeOrder = true
				} else {
					o.snap.Status = domain.StatusPaid
					emit(domain.AggregateOrder, o.snap.OrderID, domain.EventOrderPaid, domain.OrderPaid{OrderSnapshot: o.snap})
				}
			case domain.StatusPaid:
				o.snap.Status = domain.StatusShipped
				emit(domain.AggregateOrder, o.snap.OrderID, domain.EventOrderShipped, domain.OrderShipped{OrderSnapshot: o.snap})
				for k, i := range o.lines {
					q := o.snap.Items[k].Quantity
					move(i, domain.EventInventoryShipped, o.snap.OrderID, q, -q, -q)
				}
			default:
				o.snap.Status = domain.StatusDelivered
				emit(domain.AggregateOrder, o.snap.OrderID, domain.EventOrderDelivered, domain.OrderDelivered{OrderSnapshot: o.snap})
				closeOrder = true
			}
			if closeOrder {
				open[j] = open[len(open)-1]
				open = open[:len(open)-1]
			}
		}
	}
	return out
}

// filterEvents keeps the events a projection's consumers deliver: those of
// aggregateTypes, and of eventTypes when any are given.
func filterEvents(events []projections.Envelope, aggregateTypes []string, eventTypes ...string) []projections.Envelope {
	var out []projections.Envelope
	for _, e := range events {
		if slices.Contains(aggregateTypes, e.AggregateType) && (len(eventTypes) == 0 || slices.Contains(eventTypes, e.EventType)) {
			out = append(out, e)
		}
	}
	return out
}

func chunk[T any](s []T, n int) [][]T {
	var out [][]T
	for len(s) > 0 {
		k := min(n, len(s))
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}

// deleteRedisPrefix unlinks every key that starts with prefix (which holds no
// glob metacharacters).
// scratchRedis connects to the Redis of rawURL and empties the keys under
// prefix; drop empties them again and closes the client.
func scratchRedis(ctx context.Context, rawURL, prefix string) (rdb *redis.Client, drop func(), err error) {
	ropts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("redis url: %w", err)
	}
	rdb = redis.NewClient(ropts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("redis at %s: %w (run `bash scripts/services.sh`)", ropts.Addr, err)
	}
	if err := deleteRedisPrefix(ctx, rdb, prefix); err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return rdb, func() {
		_ = deleteRedisPrefix(context.WithoutCancel(ctx), rdb, prefix)
		rdb.Close()
	}, nil
}

func deleteRedisPrefix(ctx context.Context, rdb *redis.Client, prefix string) error {
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, keys...).Err()
		keys = keys[:0]
		return err
	}
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("redis: delete %s*: %w", prefix, err)
	}
	return flush()
}

// scratchClickHouse (re)creates the database name on the server of rawURL
// (clickhouse://host:port/database) and returns a connection to it and a
// function that drops it.
func scratchClickHouse(ctx context.Context, rawURL, name string) (driver.Conn, func(), error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "clickhouse" || u.Host == "" {
		return nil, nil, fmt.Errorf("clickhouse url %q: want clickhouse://host:port/database", rawURL)
	}
	open := func(db string) (driver.Conn, error) {
		opts := &clickhouse.Options{Addr: []string{u.Host}, Auth: clickhouse.Auth{Database: db}, DialTimeout: 5 * time.Second}
		if u.User != nil {
			opts.Auth.Username = u.User.Username()
			opts.Auth.Password, _ = u.User.Password()
		}
		return clickhouse.Open(opts)
	}
	admin, err := open("default")
	if err == nil {
		err = admin.Ping(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("ClickHouse at %s: %w (run `bash scripts/services.sh`)", u.Host, err)
	}
	drop := func() {
		_ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name)
		_ = admin.Close()
	}
	if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		drop()
		return nil, nil, err
	}
	if err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		drop()
		return nil, nil, err
	}
	conn, err := open(name)
	if err != nil {
		drop()
		return nil, nil, err
	}
	return conn, func() { _ = conn.Close(); drop() }, nil
}
