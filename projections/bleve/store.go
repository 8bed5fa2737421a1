// Package blevestore keeps the product catalog read model in an embedded,
// on-disk Bleve index: one document per SKU with the product's catalog data
// and its available stock, full-text search over name and description, and
// category and price facets. It is the catalog store jetcqrs uses when no
// Elasticsearch is configured.
//
// Each read-model generation lives in its own directory; a rebuild opens a
// new directory, replays the stream into it and hands it to the readers.
package blevestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/index/scorch"
	index "github.com/blevesearch/bleve_index_api"
	bolt "go.etcd.io/bbolt"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

var (
	_ projections.Applier       = (*CatalogStore)(nil)
	_ projections.CatalogReader = (*CatalogStore)(nil)
	_ projections.VersionReader = (*CatalogStore)(nil)
)

// ErrSchemaMismatch is returned by Open for an index built with another
// mapping than this version of the store writes; rebuild the read model
// into a new generation directory.
var ErrSchemaMismatch = errors.New("blevestore: index was built with another catalog mapping; rebuild it into a new generation")

// CatalogStore is the catalog read model over one Bleve index directory. It
// is safe for concurrent use; Applies are serialized.
type CatalogStore struct {
	idx bleve.Index

	// applyMu serializes Apply's read-modify-write of documents.
	applyMu sync.Mutex

	// search caches Search's results until the next batch.
	search *searchCache
}

// DefaultLockTimeout is how long Open waits for another holder of the
// directory to let go.
const DefaultLockTimeout = 10 * time.Second

// Option configures Open.
type Option func(*options)

type options struct {
	lockTimeout  time.Duration
	cacheEntries int
	cacheMetrics *SearchCacheMetrics
}

// WithLockTimeout sets how long Open waits for the directory's lock, held
// while another CatalogStore (in this process or another) has it open.
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) { o.lockTimeout = d }
}

// Open opens the catalog index in dir, creating it when dir does not exist or
// is an empty directory. One CatalogStore at a time may have a directory
// open; Open fails if the lock is not free within the lock timeout.
func Open(dir string, opts ...Option) (*CatalogStore, error) {
	o := options{lockTimeout: DefaultLockTimeout, cacheEntries: DefaultSearchCacheEntries}
	for _, opt := range opts {
		opt(&o)
	}
	if o.lockTimeout <= 0 {
		return nil, fmt.Errorf("blevestore: open %s: lock timeout %s: must be > 0", dir, o.lockTimeout)
	}
	// Without a timeout Bolt, which holds the index's root, waits for the
	// lock forever.
	boltCfg := map[string]any{"bolt_timeout": o.lockTimeout.String()}

	idx, err := bleve.OpenUsing(dir, boltCfg)
	if errors.Is(err, bleve.ErrorIndexPathDoesNotExist) ||
		errors.Is(err, bleve.ErrorIndexMetaMissing) && isEmptyDir(dir) {
		return create(dir, boltCfg, o)
	}
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("blevestore: open %s: still locked after %s: another store has it open: %w", dir, o.lockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("blevestore: open %s: %w", dir, err)
	}
	schema, err := idx.GetInternal([]byte(schemaKey))
	if err == nil && !bytes.Equal(schema, []byte(schemaVersion)) {
		err = fmt.Errorf("%w (%s has schema %q, this build writes %q)", ErrSchemaMismatch, dir, schema, schemaVersion)
	}
	if err != nil {
		_ = idx.Close()
		return nil, fmt.Errorf("blevestore: open %s: %w", dir, err)
	}
	return newCatalogStore(dir, idx, o)
}

func create(dir string, boltCfg map[string]any, o options) (*CatalogStore, error) {
	idx, err := bleve.NewUsing(dir, catalogMapping(), scorch.Name, scorch.Name, boltCfg)
	if err != nil {
		return nil, fmt.Errorf("blevestore: create %s: %w", dir, err)
	}
	if err := idx.SetInternal([]byte(schemaKey), []byte(schemaVersion)); err != nil {
		_ = idx.Close()
		return nil, fmt.Errorf("blevestore: create %s: %w", dir, err)
	}
	return newCatalogStore(dir, idx, o)
}

func newCatalogStore(dir string, idx bleve.Index, o options) (*CatalogStore, error) {
	search, err := newSearchCache(o.cacheEntries, o.cacheMetrics)
	if err != nil {
		_ = idx.Close()
		return nil, fmt.Errorf("blevestore: open %s: %w", dir, err)
	}
	return &CatalogStore{idx: idx, search: search}, nil
}

func isEmptyDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 0
}

// Close closes the index; the store is unusable afterwards.
func (s *CatalogStore) Close() error {
	if err := s.idx.Close(); err != nil {
		return fmt.Errorf("blevestore: close: %w", err)
	}
	return nil
}

// Apply implements projections.Applier: it loads the documents of the batch's
// SKUs, applies each event whose aggregate version is above the one the
// document holds for its part (product or inventory), and writes the changed
// documents in one Bleve batch, which is durable on disk when Apply returns.
// Events of other aggregates are ignored. An undecodable event fails the whole
// batch with a *projections.PoisonError before anything is written.
func (s *CatalogStore) Apply(ctx context.Context, events []projections.Envelope) error {
	return s.apply(ctx, events, 0)
}

// checkpointKey names the internal value holding the index's checkpoint.
const checkpointKey = "jetcqrs.catalog.checkpoint"

// ApplyThrough is Apply for a reader of the stream that keeps its own
// position: it also records seq as the index's checkpoint, in the same Bleve
// batch as the documents, so that what Checkpoint returns always agrees with
// the data, whatever stops the process. The checkpoint never goes down; a
// batch that changes no document still records it.
func (s *CatalogStore) ApplyThrough(ctx context.Context, events []projections.Envelope, seq uint64) error {
	return s.apply(ctx, events, seq)
}

// Checkpoint returns the sequence the last ApplyThrough recorded, 0 for none.
func (s *CatalogStore) Checkpoint(context.Context) (uint64, error) {
	v, err := s.idx.GetInternal([]byte(checkpointKey))
	if err != nil {
		return 0, fmt.Errorf("blevestore: checkpoint: %w", err)
	}
	if len(v) != 8 {
		return 0, nil
	}
	return binary.BigEndian.Uint64(v), nil
}

func (s *CatalogStore) apply(ctx context.Context, events []projections.Envelope, checkpoint uint64) error {
	changes, err := projections.DecodeCatalogEvents(events)
	if err != nil || len(changes) == 0 && checkpoint == 0 {
		return err
	}

	// The read, the version checks and the batch happen under one lock: no
	// other Apply can write a document between its read and its write.
	s.applyMu.Lock()
	defer s.applyMu.Unlock()

	skus := make([]string, 0, len(changes))
	for _, c := range changes {
		skus = append(skus, c.SKU)
	}
	docs, err := s.load(skus)
	if err != nil {
		return fmt.Errorf("blevestore: apply: %w", err)
	}
	changed := make(map[string]bool)
	for _, c := range changes {
		d := docs[c.SKU]
		if d == nil {
			d = &projections.CatalogDoc{SKU: c.SKU}
			docs[c.SKU] = d
		}
		if d.Apply(c) {
			changed[c.SKU] = true
		}
	}
	if checkpoint > 0 {
		cur, err := s.Checkpoint(ctx)
		if err != nil {
			return err
		}
		if cur >= checkpoint {
			checkpoint = 0
		}
	}
	if len(changed) == 0 && checkpoint == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blevestore: apply: %w", err)
	}

	batch := s.idx.NewBatch()
	if checkpoint > 0 {
		batch.SetInternal([]byte(checkpointKey), binary.BigEndian.AppendUint64(nil, checkpoint))
	}
	for sku := range changed {
		fields, err := indexFields(docs[sku])
		if err != nil {
			return fmt.Errorf("blevestore: apply: %w", err)
		}
		if err := batch.Index(sku, fields); err != nil {
			return fmt.Errorf("blevestore: apply: index %s: %w", sku, err)
		}
	}
	err = s.idx.Batch(batch)
	s.search.invalidate() // even a failed batch may be partly searchable
	if err != nil {
		return fmt.Errorf("blevestore: apply: write batch: %w", err)
	}
	return nil
}

// Product implements projections.CatalogReader. A SKU the store knows only
// from inventory events is not a product yet: ErrNotFound.
func (s *CatalogStore) Product(_ context.Context, sku string) (projections.ProductView, error) {
	docs, err := s.load([]string{sku})
	if err != nil {
		return projections.ProductView{}, fmt.Errorf("blevestore: product %s: %w", sku, err)
	}
	d := docs[sku]
	if d == nil || !d.HasProduct {
		return projections.ProductView{}, projections.ErrNotFound
	}
	return d.View(), nil
}

// AppliedVersion implements projections.VersionReader for the product
// aggregate (the version Product and Search show) and the inventory
// aggregate (the version of the stock behind Available); 0 when the store
// has applied none.
func (s *CatalogStore) AppliedVersion(_ context.Context, aggregateType, aggregateID string) (int64, error) {
	if aggregateType != domain.AggregateProduct && aggregateType != domain.AggregateInventory {
		return 0, fmt.Errorf("blevestore: the catalog keeps no versions of aggregate type %q", aggregateType)
	}
	docs, err := s.load([]string{aggregateID})
	if err != nil {
		return 0, fmt.Errorf("blevestore: applied version %s %s: %w", aggregateType, aggregateID, err)
	}
	d := docs[aggregateID]
	switch {
	case d == nil:
		return 0, nil
	case aggregateType == domain.AggregateInventory:
		return d.InventoryVersion, nil
	case d.HasProduct:
		return d.Version, nil
	}
	return 0, nil
}

// load reads the stored documents of skus from one index snapshot; SKUs
// without a document are absent from the result.
func (s *CatalogStore) load(skus []string) (map[string]*projections.CatalogDoc, error) {
	adv, err := s.idx.Advanced()
	if err != nil {
		return nil, err
	}
	r, err := adv.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()

	docs := make(map[string]*projections.CatalogDoc, len(skus))
	for _, sku := range skus {
		if _, seen := docs[sku]; seen {
			continue
		}
		doc, err := r.Document(sku)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", sku, err)
		}
		if doc == nil {
			continue
		}
		var source []byte
		doc.VisitFields(func(f index.Field) {
			if f.Name() == fieldSource {
				source = f.Value()
			}
		})
		if source == nil {
			return nil, fmt.Errorf("read %s: document has no %s field", sku, fieldSource)
		}
		d := new(projections.CatalogDoc)
		if err := json.Unmarshal(source, d); err != nil {
			return nil, fmt.Errorf("read %s: %w", sku, err)
		}
		docs[sku] = d
	}
	return docs, nil
}

// indexFields is the Bleve document of d: the indexed fields of the mapping
// and d itself as the stored source.
func indexFields(d *projections.CatalogDoc) (map[string]any, error) {
	source, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", d.SKU, err)
	}
	return map[string]any{
		fieldName:        d.Name,
		fieldDescription: d.Description,
		fieldCategory:    d.Category,
		fieldPrice:       d.PriceCents,
		fieldAvailable:   d.Available,
		fieldHasProduct:  d.HasProduct,
		fieldSource:      string(source),
	}, nil
}
