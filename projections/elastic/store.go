// Package elasticstore keeps the product catalog read model in Elasticsearch
// 8: one document per SKU with the product's catalog data and whether it is
// in stock, full-text search over name and description, and category and price
// aggregations.
//
// Every read-model generation is an index of its own, <alias>-g<N>; readers
// go through the alias, so a rebuild fills a new generation while the old one
// serves, then SwapAlias moves the readers over in one atomic step.
//
// A document holds two aggregates, the product and its inventory, each
// guarded by its own aggregate version (see projections.CatalogDoc), so no
// single external version can serve. Apply reads a document, applies the
// events that are newer than its parts, and writes it only if it is still the
// document read (if_seq_no/if_primary_term), retrying on a conflict: a write
// computed from older state (a stale projector, a replay racing the live
// worker) never lands.
package elasticstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

var (
	_ projections.Applier         = (*CatalogStore)(nil)
	_ projections.CatalogReader   = (*CatalogStore)(nil)
	_ projections.VersionReader   = (*CatalogStore)(nil)
	_ projections.StockFlagReader = (*CatalogStore)(nil)
)

// DefaultAlias is the alias the catalog's readers use.
const DefaultAlias = "jetcqrs-catalog"

// ErrSchemaMismatch is returned by EnsureIndex for an existing index that was
// created with another catalog mapping; rebuild into a new generation.
var ErrSchemaMismatch = errors.New("elasticstore: index was created with another catalog mapping; rebuild it into a new generation")

// Config configures a CatalogStore. DefaultConfig has the defaults.
type Config struct {
	// Alias is the name readers use; generation N is the index Alias-gN.
	Alias string
	// Generation is the generation this store writes (>= 1).
	Generation int
	// Shards and Replicas are the new index's number_of_shards and
	// number_of_replicas.
	Shards, Replicas int
	// Refresh is the bulk request's refresh parameter: "" or "false" (a write
	// becomes searchable at the index's next periodic refresh; a search with
	// SearchQuery.Fresh refreshes first), "wait_for" (Apply returns once it
	// is searchable: slower) or "true" (forces a refresh; for tests).
	Refresh string
}

// DefaultConfig is generation 1 behind DefaultAlias, one shard, one replica,
// no refresh on write.
func DefaultConfig() Config {
	return Config{Alias: DefaultAlias, Generation: 1, Shards: 1, Replicas: 1}
}

var aliasPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,199}$`)

// Validate names the first field that is not usable.
func (c Config) Validate() error {
	switch {
	case !aliasPattern.MatchString(c.Alias):
		return fmt.Errorf("elasticstore: Alias %q: want 1-200 characters of a-z 0-9 . _ -, starting with a letter or digit", c.Alias)
	case c.Generation < 1:
		return fmt.Errorf("elasticstore: Generation %d: must be >= 1", c.Generation)
	case c.Shards < 1:
		return fmt.Errorf("elasticstore: Shards %d: must be >= 1", c.Shards)
	case c.Replicas < 0:
		return fmt.Errorf("elasticstore: Replicas %d: must be >= 0", c.Replicas)
	case !slices.Contains([]string{"", "false", "true", "wait_for"}, c.Refresh):
		return fmt.Errorf(`elasticstore: Refresh %q: want "", "false", "true" or "wait_for"`, c.Refresh)
	}
	return nil
}

// Error is an error answer of Elasticsearch, for one request or one bulk item.
type Error struct {
	Op     string // what the store was doing
	Status int    // HTTP status
	Type   string // Elasticsearch error type, e.g. version_conflict_engine_exception
	Reason string
}

func (e *Error) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("elasticstore: %s: HTTP %d: %s", e.Op, e.Status, e.Reason)
	}
	return fmt.Sprintf("elasticstore: %s: HTTP %d %s: %s", e.Op, e.Status, e.Type, e.Reason)
}

// CatalogStore is the catalog read model in Elasticsearch. Apply writes this
// store's generation index; Product, Search and AppliedVersion read the
// alias, i.e. whichever generation readers currently see. It is safe for
// concurrent use.
type CatalogStore struct {
	es    *elasticsearch.Client
	cfg   Config
	index string
}

// New returns a store over client; it sends no request (see EnsureIndex).
func New(client *elasticsearch.Client, cfg Config) (*CatalogStore, error) {
	if client == nil {
		return nil, errors.New("elasticstore: nil client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &CatalogStore{es: client, cfg: cfg, index: indexName(cfg.Alias, cfg.Generation)}, nil
}

func indexName(alias string, gen int) string { return alias + "-g" + strconv.Itoa(gen) }

// Index is the name of the index this store writes.
func (s *CatalogStore) Index() string { return s.index }

// Alias is the name this store reads.
func (s *CatalogStore) Alias() string { return s.cfg.Alias }

// EnsureIndex creates this generation's index with the catalog mapping, or
// accepts an existing one created with the same mapping (ErrSchemaMismatch
// otherwise).
func (s *CatalogStore) EnsureIndex(ctx context.Context) error {
	body, err := json.Marshal(indexDefinition(s.cfg))
	if err != nil {
		return fmt.Errorf("elasticstore: create index %s: %w", s.index, err)
	}
	res, err := s.es.Indices.Create(s.index, s.es.Indices.Create.WithContext(ctx),
		s.es.Indices.Create.WithBody(bytes.NewReader(body)))
	err = decodeResponse("create index "+s.index, res, err, nil)
	var esErr *Error
	if !errors.As(err, &esErr) || esErr.Type != "resource_already_exists_exception" {
		return err
	}

	res, err = s.es.Indices.GetMapping(s.es.Indices.GetMapping.WithContext(ctx),
		s.es.Indices.GetMapping.WithIndex(s.index))
	var mappings map[string]struct {
		Mappings struct {
			Meta map[string]any `json:"_meta"`
		} `json:"mappings"`
	}
	if err := decodeResponse("get mapping of "+s.index, res, err, &mappings); err != nil {
		return err
	}
	if got := mappings[s.index].Mappings.Meta[schemaMetaKey]; got != schemaVersion {
		return fmt.Errorf("%w (%s has schema %v, this build writes %s)", ErrSchemaMismatch, s.index, got, schemaVersion)
	}
	return nil
}

// SwapAlias points the alias at generation gen's index and away from every
// other index, in one atomic _aliases request: readers see either the old
// generation or the new one, never both or neither. The index must exist.
func (s *CatalogStore) SwapAlias(ctx context.Context, gen int) error {
	if gen < 1 {
		return fmt.Errorf("elasticstore: swap alias: generation %d: must be >= 1", gen)
	}
	target := indexName(s.cfg.Alias, gen)
	current, err := s.aliasIndices(ctx)
	if err != nil {
		return err
	}
	if slices.Equal(current, []string{target}) {
		return nil
	}

	type aliasAction struct {
		Index     string `json:"index"`
		Alias     string `json:"alias"`
		MustExist *bool  `json:"must_exist,omitempty"`
	}
	var actions []map[string]aliasAction
	mustExist := true // a concurrent swap fails this one instead of half-applying it
	for _, idx := range current {
		if idx != target {
			actions = append(actions, map[string]aliasAction{"remove": {Index: idx, Alias: s.cfg.Alias, MustExist: &mustExist}})
		}
	}
	actions = append(actions, map[string]aliasAction{"add": {Index: target, Alias: s.cfg.Alias}})
	body, err := json.Marshal(map[string]any{"actions": actions})
	if err != nil {
		return fmt.Errorf("elasticstore: swap alias: %w", err)
	}

	res, err := s.es.Indices.UpdateAliases(bytes.NewReader(body), s.es.Indices.UpdateAliases.WithContext(ctx))
	var ack struct {
		Errors bool `json:"errors"`
	}
	if err := decodeResponse("swap alias "+s.cfg.Alias+" to "+target, res, err, &ack); err != nil {
		return err
	}
	if ack.Errors {
		return fmt.Errorf("elasticstore: swap alias %s to %s: some actions failed", s.cfg.Alias, target)
	}
	return nil
}

// DropGeneration deletes generation gen's index; it refuses while the alias
// points at it. Dropping a generation that does not exist is not an error.
func (s *CatalogStore) DropGeneration(ctx context.Context, gen int) error {
	idx := indexName(s.cfg.Alias, gen)
	current, err := s.aliasIndices(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(current, idx) {
		return fmt.Errorf("elasticstore: drop %s: readers use it through alias %s; swap the alias first", idx, s.cfg.Alias)
	}
	res, err := s.es.Indices.Delete([]string{idx}, s.es.Indices.Delete.WithContext(ctx))
	err = decodeResponse("delete index "+idx, res, err, nil)
	var esErr *Error
	if errors.As(err, &esErr) && esErr.Status == 404 {
		return nil
	}
	return err
}

// aliasIndices lists, sorted, the indices the alias points at.
func (s *CatalogStore) aliasIndices(ctx context.Context) ([]string, error) {
	res, err := s.es.Indices.GetAlias(s.es.Indices.GetAlias.WithContext(ctx),
		s.es.Indices.GetAlias.WithName(s.cfg.Alias))
	var byIndex map[string]json.RawMessage
	err = decodeResponse("get alias "+s.cfg.Alias, res, err, &byIndex)
	var esErr *Error
	if errors.As(err, &esErr) && esErr.Status == 404 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	indices := make([]string, 0, len(byIndex))
	for idx := range byIndex {
		indices = append(indices, idx)
	}
	slices.Sort(indices)
	return indices, nil
}

// Apply implements projections.Applier in two requests: one _mget of the
// batch's documents from this generation's index, then, after applying the
// events in memory (each only if its aggregate version is above the one the
// document holds for its part, product or inventory), one _bulk that writes
// each changed document on the condition that it is still the one read
// (if_seq_no and if_primary_term from the _mget; create for a new one). A
// document that changed in between (another writer: a stale projector, a
// replay racing the live worker) is a 409 version conflict: its events are
// applied again to the document as it now is, up to maxConflictRetries
// times. Events of other aggregates are ignored; an undecodable event fails
// the batch with a *projections.PoisonError before any request.
func (s *CatalogStore) Apply(ctx context.Context, events []projections.Envelope) error {
	changes, err := projections.DecodeCatalogEvents(events)
	if err != nil || len(changes) == 0 {
		return err
	}
	for attempt := 1; ; attempt++ {
		conflicts, err := s.applyOnce(ctx, changes)
		if err != nil {
			return withReply(err)
		}
		if len(conflicts) == 0 {
			return nil
		}
		if attempt == maxConflictRetries {
			return fmt.Errorf("elasticstore: apply: %d documents changed under every one of %d writes: %s",
				len(conflicts), attempt, strings.Join(conflicts, ", "))
		}
		changes = slices.DeleteFunc(changes, func(c projections.CatalogChange) bool { return !slices.Contains(conflicts, c.SKU) })
	}
}

// withReply marks err with the Elasticsearch error type it carries (or its
// HTTP status), as the store's reply for the runtime's metrics.
func withReply(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	reply := e.Type
	if reply == "" {
		reply = "http_" + strconv.Itoa(e.Status)
	}
	return projections.WithReply(reply, err)
}

// maxConflictRetries bounds how often Apply writes a document that other
// writers keep changing under it; then the batch fails and is retried.
const maxConflictRetries = 5

// applyOnce reads the documents of changes, applies changes to them and
// writes the changed ones, returning the SKUs whose write met a version
// conflict.
func (s *CatalogStore) applyOnce(ctx context.Context, changes []projections.CatalogChange) ([]string, error) {
	var skus []string
	seen := make(map[string]bool)
	for _, c := range changes {
		if !seen[c.SKU] {
			seen[c.SKU] = true
			skus = append(skus, c.SKU)
		}
	}
	docs, err := s.mgetStored(ctx, s.index, skus, nil)
	if err != nil {
		return nil, err
	}
	var changed []string // in order of first change, for a deterministic bulk body
	isChanged := make(map[string]bool)
	for _, c := range changes {
		d := docs[c.SKU]
		if d == nil {
			d = &storedDoc{doc: &projections.CatalogDoc{SKU: c.SKU}}
			docs[c.SKU] = d
		}
		if d.doc.Apply(c) && !isChanged[c.SKU] {
			isChanged[c.SKU] = true
			changed = append(changed, c.SKU)
		}
	}
	if len(changed) == 0 {
		return nil, nil
	}
	return s.bulkWrite(ctx, changed, docs)
}

// bulkMeta is the action line of a bulk operation: index on the condition
// that the stored document is the one read, or create when none was.
type bulkMeta struct {
	ID          string `json:"_id"`
	IfSeqNo     *int64 `json:"if_seq_no,omitempty"`
	IfPrimaryTm *int64 `json:"if_primary_term,omitempty"`
}

// permanentTypes are the bulk item errors that name the document itself: the
// index's mapping refuses it. Writing it again cannot succeed; every other
// failure (back-pressure, a closed or read-only index, a missing shard) is a
// state of the cluster, which a retry outlives.
var permanentTypes = []string{"mapper_parsing_exception", "document_parsing_exception",
	"strict_dynamic_mapping_exception", "illegal_argument_exception"}

func (s *CatalogStore) bulkWrite(ctx context.Context, skus []string, docs map[string]*storedDoc) ([]string, error) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body) // Encode ends every value with the newline NDJSON needs
	for _, sku := range skus {
		d := docs[sku]
		action := map[string]bulkMeta{"create": {ID: sku}}
		if d.found {
			action = map[string]bulkMeta{"index": {ID: sku, IfSeqNo: &d.seqNo, IfPrimaryTm: &d.primaryTerm}}
		}
		if err := enc.Encode(action); err != nil {
			return nil, fmt.Errorf("elasticstore: bulk: %w", err)
		}
		if err := enc.Encode(d.doc); err != nil {
			return nil, fmt.Errorf("elasticstore: bulk: %w", err)
		}
	}

	opts := []func(*esapi.BulkRequest){
		s.es.Bulk.WithContext(ctx),
		s.es.Bulk.WithIndex(s.index),
		s.es.Bulk.WithFilterPath("errors", "items.*._id", "items.*.status", "items.*.error"),
		s.es.Bulk.WithHeader(map[string]string{"Content-Type": "application/x-ndjson"}),
	}
	if s.cfg.Refresh != "" {
		opts = append(opts, s.es.Bulk.WithRefresh(s.cfg.Refresh))
	}
	res, err := s.es.Bulk(&body, opts...)
	var out struct {
		Errors bool `json:"errors"`
		Items  []map[string]struct {
			ID     string     `json:"_id"`
			Status int        `json:"status"`
			Error  *errorBody `json:"error"`
		} `json:"items"`
	}
	if err := decodeResponse("bulk", res, err, &out); err != nil {
		return nil, err
	}
	if len(out.Items) != len(skus) {
		return nil, fmt.Errorf("elasticstore: bulk: %d items in the response to %d operations", len(out.Items), len(skus))
	}
	if !out.Errors {
		return nil, nil
	}
	var conflicts []string
	var failed []error
	rejected := false
	for i, item := range out.Items {
		if len(item) != 1 {
			failed = append(failed, fmt.Errorf("elasticstore: bulk: item %d (%s): no result", i, skus[i]))
			continue
		}
		for _, r := range item {
			switch {
			case r.Status >= 200 && r.Status < 300:
			case r.Status == 409 && r.Error != nil && r.Error.Type == "version_conflict_engine_exception":
				conflicts = append(conflicts, skus[i])
			default:
				e := &Error{Op: "index " + skus[i], Status: r.Status}
				if r.Error != nil {
					e.Type, e.Reason = r.Error.Type, r.Error.Reason
				}
				rejected = rejected || r.Status == 400 && slices.Contains(permanentTypes, e.Type)
				failed = append(failed, e)
			}
		}
	}
	if len(failed) == 0 {
		return conflicts, nil
	}
	err = fmt.Errorf("elasticstore: bulk: %d of %d documents not written: %w", len(failed), len(skus), errors.Join(failed...))
	if rejected {
		return nil, fmt.Errorf("%w: %w", projections.ErrRejected, err)
	}
	return nil, err
}

// Product implements projections.CatalogReader, reading through the alias in
// real time (no refresh needed). A SKU known only from inventory events is not
// a product yet: ErrNotFound.
func (s *CatalogStore) Product(ctx context.Context, sku string) (projections.ProductView, error) {
	docs, err := s.mget(ctx, s.cfg.Alias, []string{sku}, nil)
	if err != nil {
		return projections.ProductView{}, err
	}
	d := docs[sku]
	if d == nil || !d.HasProduct {
		return projections.ProductView{}, projections.ErrNotFound
	}
	return d.View(), nil
}

// AppliedVersion implements projections.VersionReader for the product
// aggregate (the version Product and Search show) and the inventory
// aggregate (the version of the stock event that last flipped the in-stock
// flag, see projections.CatalogDoc), reading through the alias in real time;
// 0 when none is applied.
func (s *CatalogStore) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	if aggregateType != domain.AggregateProduct && aggregateType != domain.AggregateInventory {
		return 0, fmt.Errorf("elasticstore: the catalog keeps no versions of aggregate type %q", aggregateType)
	}
	docs, err := s.mget(ctx, s.cfg.Alias, []string{aggregateID}, []string{"has_product", "version", "inventory_version"})
	if err != nil {
		return 0, err
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

// InStock implements projections.StockFlagReader, reading through the
// alias in real time. A search sees the flag after the next refresh, which a
// Fresh search forces.
func (s *CatalogStore) InStock(ctx context.Context, sku string) (bool, error) {
	docs, err := s.mget(ctx, s.cfg.Alias, []string{sku}, []string{"in_stock"})
	if err != nil {
		return false, err
	}
	d := docs[sku]
	return d != nil && d.InStock, nil
}

// storedDoc is a document as read, with what a conditional write of it
// needs.
type storedDoc struct {
	doc         *projections.CatalogDoc
	found       bool
	seqNo       int64
	primaryTerm int64
}

// mget reads documents by SKU from target (an index or the alias) in real
// time; SKUs without a document are absent from the result.
func (s *CatalogStore) mget(ctx context.Context, target string, skus []string, sourceIncludes []string) (map[string]*projections.CatalogDoc, error) {
	stored, err := s.mgetStored(ctx, target, skus, sourceIncludes)
	if err != nil {
		return nil, err
	}
	docs := make(map[string]*projections.CatalogDoc, len(stored))
	for id, d := range stored {
		docs[id] = d.doc
	}
	return docs, nil
}

// mgetStored is mget with each document's sequence number and primary term.
func (s *CatalogStore) mgetStored(ctx context.Context, target string, skus []string, sourceIncludes []string) (map[string]*storedDoc, error) {
	body, err := json.Marshal(map[string][]string{"ids": skus})
	if err != nil {
		return nil, fmt.Errorf("elasticstore: mget: %w", err)
	}
	opts := []func(*esapi.MgetRequest){s.es.Mget.WithContext(ctx), s.es.Mget.WithIndex(target)}
	if len(sourceIncludes) > 0 {
		opts = append(opts, s.es.Mget.WithSourceIncludes(sourceIncludes...))
	}
	res, err := s.es.Mget(bytes.NewReader(body), opts...)
	var out struct {
		Docs []struct {
			ID          string          `json:"_id"`
			Found       bool            `json:"found"`
			SeqNo       int64           `json:"_seq_no"`
			PrimaryTerm int64           `json:"_primary_term"`
			Source      json.RawMessage `json:"_source"`
			Error       *errorBody      `json:"error"`
		} `json:"docs"`
	}
	if err := decodeResponse("mget from "+target, res, err, &out); err != nil {
		return nil, err
	}
	docs := make(map[string]*storedDoc, len(out.Docs))
	for _, doc := range out.Docs {
		if doc.Error != nil {
			return nil, &Error{Op: "mget " + doc.ID + " from " + target, Status: 200, Type: doc.Error.Type, Reason: doc.Error.Reason}
		}
		if !doc.Found {
			continue
		}
		d := &projections.CatalogDoc{SKU: doc.ID}
		if err := json.Unmarshal(doc.Source, d); err != nil {
			return nil, fmt.Errorf("elasticstore: mget %s from %s: %w", doc.ID, target, err)
		}
		docs[doc.ID] = &storedDoc{doc: d, found: true, seqNo: doc.SeqNo, primaryTerm: doc.PrimaryTerm}
	}
	return docs, nil
}

// errorBody is Elasticsearch's error object.
type errorBody struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

// decodeResponse turns a transport error or an error status into an error
// (an *Error for the latter) and otherwise decodes the body into out, if
// out is not nil. It always closes the body.
func decodeResponse(op string, res *esapi.Response, err error, out any) error {
	if err != nil {
		return fmt.Errorf("elasticstore: %s: %w", op, err)
	}
	defer res.Body.Close()
	if res.IsError() {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		e := &Error{Op: op, Status: res.StatusCode}
		var body struct {
			Error json.RawMessage `json:"error"`
		}
		var obj errorBody
		var text string
		switch {
		case json.Unmarshal(raw, &body) == nil && json.Unmarshal(body.Error, &obj) == nil && obj.Type != "":
			e.Type, e.Reason = obj.Type, obj.Reason
		case json.Unmarshal(body.Error, &text) == nil && text != "":
			e.Reason = text
		default:
			e.Reason = strings.TrimSpace(string(raw))
		}
		return e
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("elasticstore: %s: decode response: %w", op, err)
	}
	return nil
}
