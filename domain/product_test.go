package domain_test

import (
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

func TestNewProduct(t *testing.T) {
	t.Parallel()
	cmd := validCreate()
	at := t0.Add(time.Hour)
	p, ev, err := domain.NewProduct(admin, cmd, at.In(time.FixedZone("UTC+9", 9*3600)))
	if err != nil {
		t.Fatal(err)
	}
	want := domain.ProductSnapshot{
		SKU:         "lamp-01",
		Name:        "Desk lamp",
		Description: "Warm light.\nTwo settings.",
		Category:    "lighting",
		PriceCents:  3499,
		Attributes:  map[string]string{"colour": "black", "watts": "7"},
		Version:     1,
		CreatedAt:   at,
		UpdatedAt:   at,
	}
	requireEqual(t, "snapshot", p.Snapshot(), want)
	if p.SKU() != "lamp-01" || p.Version() != 1 {
		t.Fatalf("accessors = %s v%d", p.SKU(), p.Version())
	}
	requireHeader(t, ev, domain.AggregateProduct, "lamp-01", 1, domain.EventProductCreated, at)
	requireEqual(t, "ProductCreated", payloadAs[domain.ProductCreated](t, ev), domain.ProductCreated{ProductSnapshot: want})
}

func TestNewProductByCustomerIsForbidden(t *testing.T) {
	t.Parallel()
	p, _, err := domain.NewProduct(alice, validCreate(), t0)
	requireCode(t, err, domain.CodeForbidden)
	if p != nil {
		t.Errorf("got a product with an error")
	}
}

func TestNewProductWithoutAttributes(t *testing.T) {
	t.Parallel()
	cmd := validCreate()
	cmd.Attributes = nil
	p, ev, err := domain.NewProduct(admin, cmd, t0)
	if err != nil {
		t.Fatal(err)
	}
	if a := p.Snapshot().Attributes; a == nil || len(a) != 0 {
		t.Errorf("attributes = %#v, want an empty map", a)
	}
	if a := payloadAs[domain.ProductCreated](t, ev).Attributes; a == nil || len(a) != 0 {
		t.Errorf("event attributes = %#v, want an empty map", a)
	}
}

func TestProductAttributesAreCopied(t *testing.T) {
	t.Parallel()
	cmd := validCreate()
	p, ev, err := domain.NewProduct(admin, cmd, t0)
	if err != nil {
		t.Fatal(err)
	}
	want := p.Snapshot()

	cmd.Attributes["colour"] = "pink"
	cmd.Attributes["new"] = "x"
	p.Snapshot().Attributes["watts"] = "9000"
	payloadAs[domain.ProductCreated](t, ev).Attributes["watts"] = "1"
	requireEqual(t, "after mutating the input, a snapshot and the event", p.Snapshot(), want)

	replacement := map[string]string{"size": "XL"}
	uev, err := p.Update(admin, domain.UpdateProduct{Attributes: &replacement}, t0)
	if err != nil {
		t.Fatal(err)
	}
	want = p.Snapshot()
	replacement["size"] = "XS"
	delete(replacement, "size")
	payloadAs[domain.ProductUpdated](t, uev).Attributes["size"] = "M"
	requireEqual(t, "after mutating the update map and its event", p.Snapshot(), want)
	requireEqual(t, "attributes", want.Attributes, map[string]string{"size": "XL"})
}

func TestProductUpdate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		u           domain.UpdateProduct
		wantChanged []string
		apply       func(*domain.ProductSnapshot)
	}{
		{
			name:        "name",
			u:           domain.UpdateProduct{Name: ptr("Floor lamp")},
			wantChanged: []string{"name"},
			apply:       func(s *domain.ProductSnapshot) { s.Name = "Floor lamp" },
		},
		{
			name:        "price to zero",
			u:           domain.UpdateProduct{PriceCents: ptr[int64](0)},
			wantChanged: []string{"price_cents"},
			apply:       func(s *domain.ProductSnapshot) { s.PriceCents = 0 },
		},
		{
			name:        "description cleared",
			u:           domain.UpdateProduct{Description: ptr("")},
			wantChanged: []string{"description"},
			apply:       func(s *domain.ProductSnapshot) { s.Description = "" },
		},
		{
			name:        "attributes replaced not merged",
			u:           domain.UpdateProduct{Attributes: ptr(map[string]string{"watts": "9"})},
			wantChanged: []string{"attributes"},
			apply:       func(s *domain.ProductSnapshot) { s.Attributes = map[string]string{"watts": "9"} },
		},
		{
			name:        "attributes cleared by a nil map",
			u:           domain.UpdateProduct{Attributes: ptr[map[string]string](nil)},
			wantChanged: []string{"attributes"},
			apply:       func(s *domain.ProductSnapshot) { s.Attributes = map[string]string{} },
		},
		{
			name:        "unchanged value still counts",
			u:           domain.UpdateProduct{Category: ptr("lighting")},
			wantChanged: []string{"category"},
			apply:       func(*domain.ProductSnapshot) {},
		},
		{
			name: "everything, changed list sorted",
			u: domain.UpdateProduct{
				Name:        ptr("N"),
				Description: ptr("D"),
				Category:    ptr("C"),
				PriceCents:  ptr[int64](domain.MaxPriceCents),
				Attributes:  ptr(map[string]string{}),
			},
			wantChanged: []string{"attributes", "category", "description", "name", "price_cents"},
			apply: func(s *domain.ProductSnapshot) {
				s.Name, s.Description, s.Category, s.PriceCents, s.Attributes = "N", "D", "C", domain.MaxPriceCents, map[string]string{}
			},
		},
		{
			name:        "price and name, changed list sorted",
			u:           domain.UpdateProduct{PriceCents: ptr[int64](1), Name: ptr("Z")},
			wantChanged: []string{"name", "price_cents"},
			apply:       func(s *domain.ProductSnapshot) { s.PriceCents, s.Name = 1, "Z" },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _, err := domain.NewProduct(admin, validCreate(), t0)
			if err != nil {
				t.Fatal(err)
			}
			want := p.Snapshot()
			at := t0.Add(time.Hour)

			ev, err := p.Update(admin, tc.u, at)
			if err != nil {
				t.Fatal(err)
			}

			tc.apply(&want)
			want.Version, want.UpdatedAt = 2, at
			requireEqual(t, "snapshot", p.Snapshot(), want)
			requireHeader(t, ev, domain.AggregateProduct, "lamp-01", 2, domain.EventProductUpdated, at)
			requireEqual(t, "ProductUpdated", payloadAs[domain.ProductUpdated](t, ev),
				domain.ProductUpdated{ProductSnapshot: want, Changed: tc.wantChanged})
			if !p.Snapshot().CreatedAt.Equal(t0) {
				t.Errorf("created_at moved to %v", p.Snapshot().CreatedAt)
			}
		})
	}
}

func TestProductUpdateVersionsGrow(t *testing.T) {
	t.Parallel()
	p, _, err := domain.NewProduct(admin, validCreate(), t0)
	if err != nil {
		t.Fatal(err)
	}
	for v := int64(2); v <= 6; v++ {
		ev, err := p.Update(admin, domain.UpdateProduct{PriceCents: ptr(v * 100)}, t0.Add(time.Duration(v)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if ev.AggregateVersion != v || p.Version() != v || payloadAs[domain.ProductUpdated](t, ev).Version != v {
			t.Fatalf("update %d: event v%d, product v%d", v, ev.AggregateVersion, p.Version())
		}
	}
}

func TestProductUpdateRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		actor     domain.Actor
		u         domain.UpdateProduct
		wantCode  domain.Code
		wantField string
	}{
		{name: "customer", actor: alice, u: domain.UpdateProduct{Name: ptr("x")}, wantCode: domain.CodeForbidden},
		{name: "customer with an invalid update", actor: alice, u: domain.UpdateProduct{}, wantCode: domain.CodeForbidden},
		{name: "actor without role", actor: domain.Actor{Subject: "admin-1"}, u: domain.UpdateProduct{Name: ptr("x")}, wantCode: domain.CodeForbidden},
		{name: "nothing set", actor: admin, u: domain.UpdateProduct{}, wantCode: domain.CodeInvalidRequest},
		{name: "bad price next to a good name", actor: admin, u: domain.UpdateProduct{Name: ptr("x"), PriceCents: ptr[int64](-1)}, wantCode: domain.CodeInvalidRequest, wantField: "price_cents"},
		{name: "bad attributes next to a good name", actor: admin, u: domain.UpdateProduct{Name: ptr("x"), Attributes: ptr(attrs(51))}, wantCode: domain.CodeInvalidRequest, wantField: "attributes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _, err := domain.NewProduct(admin, validCreate(), t0)
			if err != nil {
				t.Fatal(err)
			}
			before := p.Snapshot()
			ev, err := p.Update(tc.actor, tc.u, t0.Add(time.Hour))
			de := requireCode(t, err, tc.wantCode)
			if de.Field != tc.wantField {
				t.Errorf("field = %q, want %q", de.Field, tc.wantField)
			}
			if ev.Type != "" {
				t.Errorf("got a %s event with an error", ev.Type)
			}
			requireEqual(t, "snapshot", p.Snapshot(), before)
		})
	}
}

// TestAuthorizeAdminCommands: only admins create and update products and
// adjust inventory.
func TestAuthorizeAdminCommands(t *testing.T) {
	t.Parallel()
	actors := []struct {
		actor domain.Actor
		ok    bool
	}{
		{actor: admin, ok: true},
		{actor: domain.Actor{Role: domain.RoleAdmin}, ok: true},
		{actor: alice},
		{actor: domain.Actor{Subject: "x", Role: "Admin"}},
		{actor: domain.Actor{}},
	}
	for name, authorize := range map[string]func(domain.Actor) error{
		"create": domain.AuthorizeCreate, "update": domain.AuthorizeUpdate, "adjust": domain.AuthorizeAdjust,
	} {
		for _, tc := range actors {
			t.Run(name+"/"+string(tc.actor.Role)+"/"+tc.actor.Subject, func(t *testing.T) {
				t.Parallel()
				err := authorize(tc.actor)
				if tc.ok {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				requireCode(t, err, domain.CodeForbidden)
			})
		}
	}
}

func TestRehydrateProductRoundTrip(t *testing.T) {
	t.Parallel()
	p, _, err := domain.NewProduct(admin, validCreate(), t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Update(admin, domain.UpdateProduct{Name: ptr("Lamp II")}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	s := p.Snapshot()
	r := domain.RehydrateProduct(s)
	requireEqual(t, "round trip", r.Snapshot(), s)
	if r.SKU() != p.SKU() || r.Version() != p.Version() {
		t.Fatalf("accessors = %s v%d", r.SKU(), r.Version())
	}
	s.Attributes["colour"] = "red"
	if r.Snapshot().Attributes["colour"] != "black" {
		t.Fatal("RehydrateProduct kept a reference to the caller's attributes")
	}
	if _, err := r.Update(admin, domain.UpdateProduct{PriceCents: ptr[int64](1)}, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if r.Version() != 3 {
		t.Fatalf("version after update of a rehydrated product = %d, want 3", r.Version())
	}
}
