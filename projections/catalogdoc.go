package projections

import (
	"encoding/json"
	"fmt"

	"github.com/jetcqrs/jetcqrs/domain"
)

// CatalogDoc is one SKU of the catalog read model as every catalog adapter
// keeps it. It holds two aggregates: the product fields come from product
// events and InStock from inventory events. Each part is guarded by its own
// aggregate's version (Version and InventoryVersion), because the two are
// independent facts about the SKU: an event changes its part only when it
// carries a newer version, so an older one (re-published, redelivered,
// replayed) never rolls the part back, and one of the same version is the
// same event and changes nothing. ProductSeq and InventorySeq record the
// stream sequence of the event that wrote each part, to trace a document back
// to the stream.
//
// The catalog keeps whether the SKU is in stock, not how many units are
// available: every order changes the count, and a search index rewriting
// documents at that rate merges segments all the time and can cache no
// result for long. The stock part changes only when InStock flips, so
// InventoryVersion is the version of the stock event that last flipped it;
// an event between two flips leaves the document alone. That is still
// idempotent: an event redelivered after a newer one was applied is either at
// or below InventoryVersion, or after it with the InStock the document holds,
// since a different one would have flipped it. The query API takes the count
// from the stock model (ProductView.Available).
type CatalogDoc struct {
	SKU              string            `json:"sku"`
	HasProduct       bool              `json:"has_product"`
	Name             string            `json:"name"`
	Description      string            `json:"description"`
	Category         string            `json:"category"`
	PriceCents       int64             `json:"price_cents"`
	Attributes       map[string]string `json:"attributes,omitempty"`
	Version          int64             `json:"version"`
	InStock          bool              `json:"in_stock"`
	InventoryVersion int64             `json:"inventory_version"`
	ProductSeq       uint64            `json:"product_seq"`
	InventorySeq     uint64            `json:"inventory_seq"`
}

// View is the document as the query API shows it, before it fills in
// Available from the stock model.
func (d *CatalogDoc) View() ProductView {
	return ProductView{
		SKU:         d.SKU,
		Name:        d.Name,
		Description: d.Description,
		Category:    d.Category,
		PriceCents:  d.PriceCents,
		Attributes:  d.Attributes,
		InStock:     d.InStock,
		Version:     d.Version,
	}
}

// CatalogChange is a decoded event the catalog applies: exactly one of
// product and stock is set, each carrying its aggregate's version.
type CatalogChange struct {
	Seq     uint64
	SKU     string
	Product *domain.ProductSnapshot
	Stock   *domain.InventoryLevels
}

// Apply applies c if its aggregate version is above the one d holds for c's
// part and, for a stock change, it flips InStock; it reports whether d
// changed.
func (d *CatalogDoc) Apply(c CatalogChange) bool {
	if c.Product != nil {
		if d.HasProduct && c.Product.Version <= d.Version {
			return false
		}
		p := c.Product
		d.HasProduct = true
		d.Name, d.Description, d.Category = p.Name, p.Description, p.Category
		d.PriceCents, d.Version = p.PriceCents, p.Version
		d.Attributes = p.Attributes
		if len(d.Attributes) == 0 {
			d.Attributes = nil
		}
		d.ProductSeq = c.Seq
		return true
	}
	if c.Stock.Version <= d.InventoryVersion || (c.Stock.Available > 0) == d.InStock {
		return false
	}
	d.InStock, d.InventoryVersion = c.Stock.Available > 0, c.Stock.Version
	d.InventorySeq = c.Seq
	return true
}

// DecodeCatalogEvents decodes the events the catalog reads and skips those of
// other aggregates. The first event it cannot interpret is returned as a
// *PoisonError.
func DecodeCatalogEvents(events []Envelope) ([]CatalogChange, error) {
	changes := make([]CatalogChange, 0, len(events))
	for _, e := range events {
		c, ok, err := decodeCatalogEvent(e)
		if err != nil {
			return nil, &PoisonError{Seq: e.Seq, Reason: err.Error()}
		}
		if ok {
			changes = append(changes, c)
		}
	}
	return changes, nil
}

func decodeCatalogEvent(e Envelope) (CatalogChange, bool, error) {
	var c CatalogChange
	switch e.AggregateType {
	case domain.AggregateProduct:
		if e.EventType != domain.EventProductCreated && e.EventType != domain.EventProductUpdated {
			return c, false, fmt.Errorf("catalog: unknown product event type %q", e.EventType)
		}
		var p struct{ domain.ProductSnapshot }
		if err := decodeCatalogPayload(e, &p); err != nil {
			return c, false, err
		}
		c.SKU, c.Product = p.SKU, &p.ProductSnapshot
	case domain.AggregateInventory:
		switch e.EventType {
		case domain.EventInventoryAdjusted, domain.EventInventoryReserved,
			domain.EventInventoryReleased, domain.EventInventoryShipped:
		default:
			return c, false, fmt.Errorf("catalog: unknown inventory event type %q", e.EventType)
		}
		var l struct{ domain.InventoryLevels }
		if err := decodeCatalogPayload(e, &l); err != nil {
			return c, false, err
		}
		c.SKU, c.Stock = l.SKU, &l.InventoryLevels
	default:
		return c, false, nil
	}
	if c.SKU == "" || c.SKU != e.AggregateID {
		return c, false, fmt.Errorf("catalog: %s %s: payload sku %q does not match aggregate id %q",
			e.AggregateType, e.EventType, c.SKU, e.AggregateID)
	}
	c.Seq = e.Seq
	return c, true, nil
}

func decodeCatalogPayload(e Envelope, v any) error {
	if e.SchemaVersion != domain.CurrentSchemaVersion {
		return fmt.Errorf("catalog: %s %s: unknown schema version %d", e.AggregateType, e.EventType, e.SchemaVersion)
	}
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("catalog: %s %s: decode payload: %v", e.AggregateType, e.EventType, err)
	}
	return nil
}
