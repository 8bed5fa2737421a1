// Package projections keeps jetcqrs's read models current from the event
// stream: the runtime that consumes each (projection, partition) in order,
// applies batches idempotently and dead-letters poison events, and the read
// models themselves, each behind a small store interface with one adapter per
// technology (Redis, Bleve, Elasticsearch, ClickHouse).
package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"
)

// Envelope is one event as delivered from the stream. Seq is its stream
// sequence, the partition's checkpoint; AggregateVersion (equal to the
// version in the payload's snapshot) decides what a read-model key holds: a
// store applies an event only if its version is above the one the key holds
// for that aggregate, so redelivery, replay and an event re-published after
// the stream's duplicate window (under a new, higher Seq) change nothing.
type Envelope struct {
	Seq              uint64
	ID               string
	AggregateType    string
	AggregateID      string
	AggregateVersion int64
	EventType        string
	SchemaVersion    int
	OccurredAt       time.Time
	TraceParent      string
	Payload          json.RawMessage
}

// Applier is the write port of a read model.
type Applier interface {
	// Apply applies events, in stream order, in as few round trips as the
	// store allows (one for Redis, Bleve and ClickHouse). It is idempotent per
	// key and aggregate version: an event at or below the version a key
	// holds writes nothing. It returns nil only when every event is durably
	// applied; on error nothing may be assumed applied and the batch is
	// retried whole. An event it cannot interpret is reported as a
	// *PoisonError naming it, without applying the rest of the batch.
	Apply(ctx context.Context, events []Envelope) error
}

// PoisonError marks an event that can never be applied (undecodable payload,
// unknown schema version); the runtime dead-letters it and moves on.
type PoisonError struct {
	Seq    uint64
	Reason string
}

func (e *PoisonError) Error() string { return "poison event: " + e.Reason }

// ErrRejected marks a store error that retrying the same events cannot
// cure: the store refused them for what they are (a value of the wrong type,
// an argument out of range). Each store wraps it around a short, explicit
// list of such refusals; any other error is a state of the store (down,
// overloaded, restarting, misconfigured), which the runtime outwaits. A store wraps it,
// e.g. fmt.Errorf("…: %w: %w", ErrRejected, err). The runtime applies a
// rejected batch again one event at a time and dead-letters each event the
// store still rejects on its own, with the error as the reason.
var ErrRejected = errors.New("rejected by the store")

// ErrNotFound is returned by readers when the read model has no such entry.
var ErrNotFound = errors.New("not found in read model")

// OrderLineView is one line of an order as the query API shows it.
type OrderLineView struct {
	SKU        string `json:"sku"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
}

// OrderView is the order summary read model (GET /v1/orders/{id}).
type OrderView struct {
	OrderID    string          `json:"order_id"`
	UserID     string          `json:"user_id"`
	Status     string          `json:"status"`
	Items      []OrderLineView `json:"items"`
	TotalCents int64           `json:"total_cents"`
	Version    int64           `json:"version"`
	PlacedAt   time.Time       `json:"placed_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

// OrderListEntry is one entry of a user's order list, newest first.
type OrderListEntry struct {
	OrderID    string    `json:"order_id"`
	Status     string    `json:"status"`
	TotalCents int64     `json:"total_cents"`
	PlacedAt   time.Time `json:"placed_at"`
}

// OrderReader is the read port of the order summary model.
type OrderReader interface {
	// Order returns the order or ErrNotFound.
	Order(ctx context.Context, id string) (OrderView, error)
	// OrderJSON returns the order's user and its view encoded as JSON, the
	// bytes json.Marshal of Order's result gives, without decoding them; or
	// ErrNotFound. The query API serves it as it is.
	OrderJSON(ctx context.Context, id string) (userID string, view []byte, err error)
	// UserOrders returns up to limit orders of userID, newest first, starting
	// after cursor ("" for the first page), and the cursor of the next page
	// ("" when there is none). A malformed cursor is an *InvalidCursorError.
	UserOrders(ctx context.Context, userID string, limit int, cursor string) ([]OrderListEntry, string, error)
}

// InvalidCursorError reports a pagination cursor the store did not issue.
type InvalidCursorError struct{ Cursor string }

func (e *InvalidCursorError) Error() string { return "invalid cursor" }

// InventoryView is the stock read model (GET /v1/inventory/{sku}).
type InventoryView struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
	Version   int64  `json:"version"`
}

// InventoryReader is the read port of the stock model.
type InventoryReader interface {
	// Inventory returns the stock of sku or ErrNotFound.
	Inventory(ctx context.Context, sku string) (InventoryView, error)
}

// ProductView is a catalog entry as the query API shows it. Version is the
// product aggregate's version; Available follows inventory events.
type ProductView struct {
	SKU         string            `json:"sku"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Category    string            `json:"category"`
	PriceCents  int64             `json:"price_cents"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	Available   int64             `json:"available"`
	Version     int64             `json:"version"`
}

// SearchQuery is GET /v1/products. Empty Q matches every product.
type SearchQuery struct {
	Q        string
	Category string
	MinPrice *int64 // cents, inclusive
	MaxPrice *int64 // cents, inclusive
	InStock  bool   // available > 0
	Limit    int    // <= 0 means DefaultSearchLimit
	Offset   int    // < 0 means 0
	// Fresh asks for an answer that shows every write the catalog had
	// applied when Search was called, as a read-your-writes wait that just
	// ended requires. An adapter whose searches lag its writes (an
	// Elasticsearch index between refreshes) makes them visible first; one
	// whose writes are searchable at once ignores it.
	Fresh bool
}

// DefaultSearchLimit is the page size of a SearchQuery without a Limit.
const DefaultSearchLimit = 20

// MaxSearchWindow bounds Offset + Limit: Elasticsearch's default
// index.max_result_window, kept by every catalog adapter so that a query
// answers alike whichever engine serves it.
const MaxSearchWindow = 10000

// ErrBeyondSearchWindow is returned by CatalogReader.Search, before any
// request to the engine, for a query whose Offset + Limit exceeds
// MaxSearchWindow.
var ErrBeyondSearchWindow = errors.New("offset + limit exceeds the search window")

// Page returns the query's offset and limit with their defaults applied, or
// an error wrapping ErrBeyondSearchWindow.
func (q SearchQuery) Page() (offset, limit int, err error) {
	offset, limit = max(q.Offset, 0), q.Limit
	if limit <= 0 {
		limit = DefaultSearchLimit
	}
	if offset > MaxSearchWindow-limit {
		return 0, 0, fmt.Errorf("search: offset %d + limit %d: %w (%d)", offset, limit, ErrBeyondSearchWindow, MaxSearchWindow)
	}
	return offset, limit, nil
}

// FacetCount is one facet bucket.
type FacetCount struct {
	Value string `json:"value,omitempty"`
	Range string `json:"range,omitempty"`
	Count int64  `json:"count"`
}

// Facets are the category and price-range counts over all matches.
type Facets struct {
	Category []FacetCount `json:"category"`
	Price    []FacetCount `json:"price"`
}

// SearchResult is the answer of a catalog search; Total counts all matches.
type SearchResult struct {
	Total  int64         `json:"total"`
	Hits   []ProductView `json:"hits"`
	Facets Facets        `json:"facets"`
}

// PriceRange is a price facet bucket: [Min, Max] cents inclusive; Max < 0
// means unbounded.
type PriceRange struct {
	Name     string
	Min, Max int64
}

// PriceRanges are the price facet buckets every catalog adapter reports, in
// this order.
var PriceRanges = []PriceRange{
	{"0-999", 0, 999},
	{"1000-4999", 1000, 4999},
	{"5000-9999", 5000, 9999},
	{"10000-49999", 10000, 49999},
	{"50000+", 50000, -1},
}

// CatalogReader is the read port of the product catalog.
type CatalogReader interface {
	// Product returns the product or ErrNotFound.
	Product(ctx context.Context, sku string) (ProductView, error)
	// Search runs a full-text search over name and description with filters,
	// facets (computed over all matches, after filters) and paging. A query
	// past MaxSearchWindow is an error wrapping ErrBeyondSearchWindow.
	Search(ctx context.Context, q SearchQuery) (SearchResult, error)
}

// SalesQuery is GET /v1/reports/sales: [From, To) grouped by day, sku or
// category.
type SalesQuery struct {
	From, To time.Time
	GroupBy  string
}

// SalesRow is one group of the sales report. Orders counts distinct orders,
// Units sums quantities, RevenueCents sums quantity × price at placement; a
// cancelled order counts nowhere.
type SalesRow struct {
	Key          string `json:"key"`
	Orders       int64  `json:"orders"`
	Units        int64  `json:"units"`
	RevenueCents int64  `json:"revenue_cents"`
}

// SalesReader is the read port of sales analytics.
type SalesReader interface {
	// Sales returns the report rows ordered by key.
	Sales(ctx context.Context, q SalesQuery) ([]SalesRow, error)
}

// VersionReader reports the version a read model has applied for one
// aggregate, for read-your-writes waits; 0 when it has none.
type VersionReader interface {
	AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error)
}

// Aggregates yields the aggregate type and id of each event, in order: what
// an applied notice names (nats.PublishApplied).
func Aggregates(events []Envelope) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, e := range events {
			if !yield(e.AggregateType, e.AggregateID) {
				return
			}
		}
	}
}
