package domain

import (
	"slices"
	"time"
)

// CreateProduct is the command that adds a product to the catalog.
type CreateProduct struct {
	SKU         string
	Name        string
	Description string
	Category    string
	PriceCents  int64
	Attributes  map[string]string
}

// Validate checks every field against the contract's limits.
func (c CreateProduct) Validate() error {
	if err := checkSKU("sku", c.SKU); err != nil {
		return err
	}
	if err := checkText("name", c.Name, 1, MaxNameLen, false); err != nil {
		return err
	}
	if err := checkText("description", c.Description, 0, MaxDescriptionLen, true); err != nil {
		return err
	}
	if err := checkText("category", c.Category, 1, MaxCategoryLen, false); err != nil {
		return err
	}
	if err := checkPrice("price_cents", c.PriceCents); err != nil {
		return err
	}
	return checkAttributes("attributes", c.Attributes)
}

// UpdateProduct changes any subset of a product's catalog data; nil fields are
// left as they are. Attributes, when set, replace the whole map.
type UpdateProduct struct {
	Name        *string
	Description *string
	Category    *string
	PriceCents  *int64
	Attributes  *map[string]string
}

// Validate checks the fields that are set; an update that sets nothing is invalid.
func (u UpdateProduct) Validate() error {
	if u.Name == nil && u.Description == nil && u.Category == nil && u.PriceCents == nil && u.Attributes == nil {
		return invalid("", "at least one of name, description, category, price_cents, attributes is required")
	}
	if u.Name != nil {
		if err := checkText("name", *u.Name, 1, MaxNameLen, false); err != nil {
			return err
		}
	}
	if u.Description != nil {
		if err := checkText("description", *u.Description, 0, MaxDescriptionLen, true); err != nil {
			return err
		}
	}
	if u.Category != nil {
		if err := checkText("category", *u.Category, 1, MaxCategoryLen, false); err != nil {
			return err
		}
	}
	if u.PriceCents != nil {
		if err := checkPrice("price_cents", *u.PriceCents); err != nil {
			return err
		}
	}
	if u.Attributes != nil {
		return checkAttributes("attributes", *u.Attributes)
	}
	return nil
}

// Product is a catalog entry. Its stock lives in the Inventory aggregate of the
// same SKU.
type Product struct {
	s ProductSnapshot
}

// NewProduct checks that actor may create products, validates c and returns
// the new product at version 1 with its ProductCreated event.
func NewProduct(actor Actor, c CreateProduct, now time.Time) (*Product, Event, error) {
	if err := AuthorizeCreate(actor); err != nil {
		return nil, Event{}, err
	}
	if err := c.Validate(); err != nil {
		return nil, Event{}, err
	}
	now = now.UTC()
	p := &Product{s: ProductSnapshot{
		SKU:         c.SKU,
		Name:        c.Name,
		Description: c.Description,
		Category:    c.Category,
		PriceCents:  c.PriceCents,
		Attributes:  cloneAttributes(c.Attributes),
		Version:     1,
		CreatedAt:   now,
		UpdatedAt:   now,
	}}
	return p, newEvent(AggregateProduct, p.s.SKU, 1, EventProductCreated, now, ProductCreated{p.Snapshot()}), nil
}

// RehydrateProduct rebuilds a product from stored state. It is the only way
// the store turns rows back into an aggregate and trusts its input.
func RehydrateProduct(s ProductSnapshot) *Product {
	s.Attributes = cloneAttributes(s.Attributes)
	return &Product{s: s}
}

// Snapshot returns a copy of the product's state.
func (p *Product) Snapshot() ProductSnapshot {
	s := p.s
	s.Attributes = cloneAttributes(p.s.Attributes)
	return s
}

// SKU returns the product's stock keeping unit.
func (p *Product) SKU() string { return p.s.SKU }

// Version returns the product's version.
func (p *Product) Version() int64 { return p.s.Version }

// Update applies u. An update that changes nothing still counts as a change
// (version and updated_at advance) so that retries are visible and idempotent
// through the Idempotency-Key, not through guessing.
func (p *Product) Update(actor Actor, u UpdateProduct, now time.Time) (Event, error) {
	if err := AuthorizeUpdate(actor); err != nil {
		return Event{}, err
	}
	if err := u.Validate(); err != nil {
		return Event{}, err
	}
	var changed []string
	if u.Name != nil {
		p.s.Name = *u.Name
		changed = append(changed, "name")
	}
	if u.Description != nil {
		p.s.Description = *u.Description
		changed = append(changed, "description")
	}
	if u.Category != nil {
		p.s.Category = *u.Category
		changed = append(changed, "category")
	}
	if u.PriceCents != nil {
		p.s.PriceCents = *u.PriceCents
		changed = append(changed, "price_cents")
	}
	if u.Attributes != nil {
		p.s.Attributes = cloneAttributes(*u.Attributes)
		changed = append(changed, "attributes")
	}
	slices.Sort(changed)
	p.s.Version++
	p.s.UpdatedAt = now.UTC()
	return newEvent(AggregateProduct, p.s.SKU, p.s.Version, EventProductUpdated, p.s.UpdatedAt,
		ProductUpdated{ProductSnapshot: p.Snapshot(), Changed: changed}), nil
}

// AuthorizeCreate checks that actor may create products.
func AuthorizeCreate(actor Actor) error { return requireAdmin(actor, "create products") }

// AuthorizeUpdate checks that actor may update products.
func AuthorizeUpdate(actor Actor) error { return requireAdmin(actor, "update products") }
