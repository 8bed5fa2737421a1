package domain_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/jetcqrs/jetcqrs/domain"
)

func TestValidSKU(t *testing.T) {
	t.Parallel()
	tests := []struct {
		sku  string
		want bool
	}{
		{"", false},
		{"a", true},
		{"A-z_0.9", true},
		{"...", true},
		{"-", true},
		{strings.Repeat("a", domain.MaxSKULen), true},
		{strings.Repeat("a", domain.MaxSKULen+1), false},
		{"a b", false},
		{" a", false},
		{"a\n", false},
		{"a/b", false},
		{"a+b", false},
		{"a:b", false},
		{"ä", false},
		{"\x00", false},
		{"\xff", false},
		{"ａ", false}, // fullwidth letter
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.sku), func(t *testing.T) {
			t.Parallel()
			if got := domain.ValidSKU(tc.sku); got != tc.want {
				t.Fatalf("ValidSKU(%q) = %v, want %v", tc.sku, got, tc.want)
			}
		})
	}
}

func manyItems(n int) []domain.OrderLineRequest {
	items := make([]domain.OrderLineRequest, n)
	for i := range items {
		items[i] = line(fmt.Sprintf("sku-%03d", i), 1)
	}
	return items
}

func TestPlaceOrderValidate(t *testing.T) {
	t.Parallel()
	valid := func() domain.PlaceOrder { return placeCmd("alice", line("apple-1", 2), line("banana.2", 1)) }
	tests := []struct {
		name      string
		mutate    func(*domain.PlaceOrder)
		wantField string // "" when valid
		wantSKU   string
	}{
		{name: "valid", mutate: func(*domain.PlaceOrder) {}},

		{name: "empty user", mutate: func(c *domain.PlaceOrder) { c.UserID = "" }, wantField: "user_id"},
		{name: "blank user", mutate: func(c *domain.PlaceOrder) { c.UserID = "   " }, wantField: "user_id"},
		{name: "user max length", mutate: func(c *domain.PlaceOrder) { c.UserID = runes("u", domain.MaxUserIDLen) }},
		{name: "user max length in runes", mutate: func(c *domain.PlaceOrder) { c.UserID = runes("ü", domain.MaxUserIDLen) }},
		{name: "user too long", mutate: func(c *domain.PlaceOrder) { c.UserID = runes("u", domain.MaxUserIDLen+1) }, wantField: "user_id"},
		{name: "user invalid utf-8", mutate: func(c *domain.PlaceOrder) { c.UserID = "al\xffice" }, wantField: "user_id"},
		{name: "user control char", mutate: func(c *domain.PlaceOrder) { c.UserID = "alice\x00" }, wantField: "user_id"},
		{name: "user newline", mutate: func(c *domain.PlaceOrder) { c.UserID = "alice\n" }, wantField: "user_id"},

		{name: "nil items", mutate: func(c *domain.PlaceOrder) { c.Items = nil }, wantField: "items"},
		{name: "no items", mutate: func(c *domain.PlaceOrder) { c.Items = []domain.OrderLineRequest{} }, wantField: "items"},
		{name: "one item", mutate: func(c *domain.PlaceOrder) { c.Items = manyItems(1) }},
		{name: "max items", mutate: func(c *domain.PlaceOrder) { c.Items = manyItems(domain.MaxOrderItems) }},
		{name: "too many items", mutate: func(c *domain.PlaceOrder) { c.Items = manyItems(domain.MaxOrderItems + 1) }, wantField: "items"},
		{
			name:      "duplicate sku",
			mutate:    func(c *domain.PlaceOrder) { c.Items = append(c.Items, line("apple-1", 1)) },
			wantField: "items", wantSKU: "apple-1",
		},
		{
			name:      "duplicate sku far apart",
			mutate:    func(c *domain.PlaceOrder) { c.Items = append(manyItems(99), line("sku-000", 1)) },
			wantField: "items", wantSKU: "sku-000",
		},
		{name: "skus differing in case are distinct", mutate: func(c *domain.PlaceOrder) { c.Items = append(c.Items, line("APPLE-1", 1)) }},

		{name: "empty sku", mutate: func(c *domain.PlaceOrder) { c.Items[1].SKU = "" }, wantField: "items.sku"},
		{name: "sku max length", mutate: func(c *domain.PlaceOrder) { c.Items[1].SKU = runes("s", domain.MaxSKULen) }},
		{name: "sku too long", mutate: func(c *domain.PlaceOrder) { c.Items[1].SKU = runes("s", domain.MaxSKULen+1) }, wantField: "items.sku"},
		{name: "sku with space", mutate: func(c *domain.PlaceOrder) { c.Items[0].SKU = "apple 1" }, wantField: "items.sku"},
		{name: "sku with slash", mutate: func(c *domain.PlaceOrder) { c.Items[0].SKU = "../etc" }, wantField: "items.sku"},
		{name: "sku non-ascii", mutate: func(c *domain.PlaceOrder) { c.Items[0].SKU = "äpple" }, wantField: "items.sku"},
		{name: "sku invalid utf-8", mutate: func(c *domain.PlaceOrder) { c.Items[0].SKU = "\xff" }, wantField: "items.sku"},
		{name: "sku control char", mutate: func(c *domain.PlaceOrder) { c.Items[0].SKU = "a\x00" }, wantField: "items.sku"},

		{name: "quantity 0", mutate: func(c *domain.PlaceOrder) { c.Items[1].Quantity = 0 }, wantField: "items.quantity", wantSKU: "banana.2"},
		{name: "quantity 1", mutate: func(c *domain.PlaceOrder) { c.Items[1].Quantity = 1 }},
		{name: "quantity 1000", mutate: func(c *domain.PlaceOrder) { c.Items[1].Quantity = 1000 }},
		{name: "quantity 1001", mutate: func(c *domain.PlaceOrder) { c.Items[1].Quantity = 1001 }, wantField: "items.quantity", wantSKU: "banana.2"},
		{name: "quantity -1", mutate: func(c *domain.PlaceOrder) { c.Items[0].Quantity = -1 }, wantField: "items.quantity", wantSKU: "apple-1"},
		{name: "quantity min int64", mutate: func(c *domain.PlaceOrder) { c.Items[0].Quantity = math.MinInt64 }, wantField: "items.quantity", wantSKU: "apple-1"},
		{name: "quantity max int64", mutate: func(c *domain.PlaceOrder) { c.Items[0].Quantity = math.MaxInt64 }, wantField: "items.quantity", wantSKU: "apple-1"},

		{name: "method card", mutate: func(c *domain.PlaceOrder) { c.PaymentMethod = "card" }},
		{name: "method paypal", mutate: func(c *domain.PlaceOrder) { c.PaymentMethod = "paypal" }},
		{name: "method invoice", mutate: func(c *domain.PlaceOrder) { c.PaymentMethod = "invoice" }},
		{name: "method empty", mutate: func(c *domain.PlaceOrder) { c.PaymentMethod = "" }, wantField: "payment.method"},
		{name: "method capitalised", mutate: func(c *domain.PlaceOrder) { c.PaymentMethod = "Card" }, wantField: "payment.method"},
		{name: "method padded", mutate: func(c *domain.PlaceOrder) { c.PaymentMethod = " card" }, wantField: "payment.method"},
		{name: "method unknown", mutate: func(c *domain.PlaceOrder) { c.PaymentMethod = "cash" }, wantField: "payment.method"},

		{name: "token empty", mutate: func(c *domain.PlaceOrder) { c.PaymentToken = "" }, wantField: "payment.token"},
		{name: "token blank", mutate: func(c *domain.PlaceOrder) { c.PaymentToken = " " }, wantField: "payment.token"},
		{name: "token max length", mutate: func(c *domain.PlaceOrder) { c.PaymentToken = runes("t", domain.MaxPaymentTokenLen) }},
		{name: "token too long", mutate: func(c *domain.PlaceOrder) { c.PaymentToken = runes("t", domain.MaxPaymentTokenLen+1) }, wantField: "payment.token"},
		{name: "token invalid utf-8", mutate: func(c *domain.PlaceOrder) { c.PaymentToken = "tok\xc3" }, wantField: "payment.token"},
		{name: "token control char", mutate: func(c *domain.PlaceOrder) { c.PaymentToken = "tok\x7f" }, wantField: "payment.token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := valid()
			tc.mutate(&cmd)
			err := cmd.Validate()
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			de := requireInvalid(t, err, tc.wantField)
			if de.SKU != tc.wantSKU {
				t.Errorf("SKU = %q, want %q", de.SKU, tc.wantSKU)
			}
			if de.Error() == "" || de.Message == "" {
				t.Error("empty error text")
			}

			// PlaceNewOrder rejects the same command before touching stock,
			// even for an admin.
			stock := fullStock(t)
			before := levelsOf(stock)
			o, evs, err := domain.PlaceNewOrder("o-1", admin, cmd, testCatalog(), stock, t0)
			requireInvalid(t, err, tc.wantField)
			if o != nil || evs != nil {
				t.Errorf("got an order and %d events with an error", len(evs))
			}
			requireEqual(t, "levels", levelsOf(stock), before)
		})
	}
}

func validCreate() domain.CreateProduct {
	return domain.CreateProduct{
		SKU:         "lamp-01",
		Name:        "Desk lamp",
		Description: "Warm light.\nTwo settings.",
		Category:    "lighting",
		PriceCents:  3499,
		Attributes:  map[string]string{"colour": "black", "watts": "7"},
	}
}

func attrs(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = "v"
	}
	return m
}

func TestCreateProductValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		mutate    func(*domain.CreateProduct)
		wantField string // "" when valid
	}{
		{name: "valid", mutate: func(*domain.CreateProduct) {}},

		{name: "sku empty", mutate: func(c *domain.CreateProduct) { c.SKU = "" }, wantField: "sku"},
		{name: "sku max length", mutate: func(c *domain.CreateProduct) { c.SKU = runes("s", domain.MaxSKULen) }},
		{name: "sku too long", mutate: func(c *domain.CreateProduct) { c.SKU = runes("s", domain.MaxSKULen+1) }, wantField: "sku"},
		{name: "sku bad char", mutate: func(c *domain.CreateProduct) { c.SKU = "lamp#1" }, wantField: "sku"},

		{name: "name empty", mutate: func(c *domain.CreateProduct) { c.Name = "" }, wantField: "name"},
		{name: "name blank", mutate: func(c *domain.CreateProduct) { c.Name = "  \u00a0 " }, wantField: "name"},
		{name: "name max length", mutate: func(c *domain.CreateProduct) { c.Name = runes("n", domain.MaxNameLen) }},
		{name: "name max length in runes", mutate: func(c *domain.CreateProduct) { c.Name = runes("🙂", domain.MaxNameLen) }},
		{name: "name too long", mutate: func(c *domain.CreateProduct) { c.Name = runes("n", domain.MaxNameLen+1) }, wantField: "name"},
		{name: "name invalid utf-8", mutate: func(c *domain.CreateProduct) { c.Name = "lamp\xe2\x82" }, wantField: "name"},
		{name: "name newline", mutate: func(c *domain.CreateProduct) { c.Name = "desk\nlamp" }, wantField: "name"},
		{name: "name tab", mutate: func(c *domain.CreateProduct) { c.Name = "desk\tlamp" }, wantField: "name"},
		{name: "name nul", mutate: func(c *domain.CreateProduct) { c.Name = "lamp\x00" }, wantField: "name"},

		{name: "description empty", mutate: func(c *domain.CreateProduct) { c.Description = "" }},
		{name: "description max length", mutate: func(c *domain.CreateProduct) { c.Description = runes("d", domain.MaxDescriptionLen) }},
		{name: "description too long", mutate: func(c *domain.CreateProduct) { c.Description = runes("d", domain.MaxDescriptionLen+1) }, wantField: "description"},
		{name: "description multiline", mutate: func(c *domain.CreateProduct) { c.Description = "a\r\n\tb\nc" }},
		{name: "description bell", mutate: func(c *domain.CreateProduct) { c.Description = "ding\x07" }, wantField: "description"},
		{name: "description invalid utf-8", mutate: func(c *domain.CreateProduct) { c.Description = "\xc0\xaf" }, wantField: "description"},

		{name: "category empty", mutate: func(c *domain.CreateProduct) { c.Category = "" }, wantField: "category"},
		{name: "category blank", mutate: func(c *domain.CreateProduct) { c.Category = " " }, wantField: "category"},
		{name: "category max length", mutate: func(c *domain.CreateProduct) { c.Category = runes("c", domain.MaxCategoryLen) }},
		{name: "category too long", mutate: func(c *domain.CreateProduct) { c.Category = runes("c", domain.MaxCategoryLen+1) }, wantField: "category"},
		{name: "category control char", mutate: func(c *domain.CreateProduct) { c.Category = "\x1f" }, wantField: "category"},

		{name: "price 0", mutate: func(c *domain.CreateProduct) { c.PriceCents = 0 }},
		{name: "price 10^11", mutate: func(c *domain.CreateProduct) { c.PriceCents = 100_000_000_000 }},
		{name: "price 10^11+1", mutate: func(c *domain.CreateProduct) { c.PriceCents = 100_000_000_001 }, wantField: "price_cents"},
		{name: "price -1", mutate: func(c *domain.CreateProduct) { c.PriceCents = -1 }, wantField: "price_cents"},
		{name: "price min int64", mutate: func(c *domain.CreateProduct) { c.PriceCents = math.MinInt64 }, wantField: "price_cents"},
		{name: "price max int64", mutate: func(c *domain.CreateProduct) { c.PriceCents = math.MaxInt64 }, wantField: "price_cents"},

		{name: "attributes nil", mutate: func(c *domain.CreateProduct) { c.Attributes = nil }},
		{name: "attributes max entries", mutate: func(c *domain.CreateProduct) { c.Attributes = attrs(domain.MaxAttributes) }},
		{name: "attributes too many", mutate: func(c *domain.CreateProduct) { c.Attributes = attrs(domain.MaxAttributes + 1) }, wantField: "attributes"},
		{name: "attribute key empty", mutate: func(c *domain.CreateProduct) { c.Attributes[""] = "x" }, wantField: "attributes"},
		{name: "attribute key blank", mutate: func(c *domain.CreateProduct) { c.Attributes["  "] = "x" }, wantField: "attributes"},
		{name: "attribute key max length", mutate: func(c *domain.CreateProduct) { c.Attributes[runes("k", domain.MaxAttributeKeyLen)] = "x" }},
		{name: "attribute key too long", mutate: func(c *domain.CreateProduct) { c.Attributes[runes("k", domain.MaxAttributeKeyLen+1)] = "x" }, wantField: "attributes"},
		{name: "attribute key control char", mutate: func(c *domain.CreateProduct) { c.Attributes["k\n"] = "x" }, wantField: "attributes"},
		{name: "attribute key invalid utf-8", mutate: func(c *domain.CreateProduct) { c.Attributes["k\xff"] = "x" }, wantField: "attributes"},
		{name: "attribute value empty", mutate: func(c *domain.CreateProduct) { c.Attributes["colour"] = "" }},
		{name: "attribute value max length", mutate: func(c *domain.CreateProduct) { c.Attributes["colour"] = runes("v", domain.MaxAttributeValLen) }},
		{name: "attribute value too long", mutate: func(c *domain.CreateProduct) { c.Attributes["colour"] = runes("v", domain.MaxAttributeValLen+1) }, wantField: "attributes.colour"},
		{name: "attribute value newline", mutate: func(c *domain.CreateProduct) { c.Attributes["colour"] = "black\nwhite" }, wantField: "attributes.colour"},
		{name: "attribute value invalid utf-8", mutate: func(c *domain.CreateProduct) { c.Attributes["colour"] = "\xfe" }, wantField: "attributes.colour"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := validCreate()
			tc.mutate(&cmd)
			err := cmd.Validate()
			p, ev, perr := domain.NewProduct(admin, cmd, t0)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if perr != nil || p == nil {
					t.Fatalf("NewProduct: %v", perr)
				}
				return
			}
			requireInvalid(t, err, tc.wantField)
			requireInvalid(t, perr, tc.wantField)
			if p != nil || ev.Type != "" {
				t.Errorf("NewProduct returned %v and a %q event with an error", p, ev.Type)
			}
		})
	}
}

func TestUpdateProductValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		u         domain.UpdateProduct
		wantErr   bool
		wantField string
	}{
		{name: "nothing set", u: domain.UpdateProduct{}, wantErr: true, wantField: ""},
		{name: "name", u: domain.UpdateProduct{Name: ptr("New name")}},
		{name: "name empty", u: domain.UpdateProduct{Name: ptr("")}, wantErr: true, wantField: "name"},
		{name: "name blank", u: domain.UpdateProduct{Name: ptr("   ")}, wantErr: true, wantField: "name"},
		{name: "name too long", u: domain.UpdateProduct{Name: ptr(runes("n", domain.MaxNameLen+1))}, wantErr: true, wantField: "name"},
		{name: "name invalid utf-8", u: domain.UpdateProduct{Name: ptr("\xff")}, wantErr: true, wantField: "name"},
		{name: "description empty clears", u: domain.UpdateProduct{Description: ptr("")}},
		{name: "description too long", u: domain.UpdateProduct{Description: ptr(runes("d", domain.MaxDescriptionLen+1))}, wantErr: true, wantField: "description"},
		{name: "description control char", u: domain.UpdateProduct{Description: ptr("\x1b")}, wantErr: true, wantField: "description"},
		{name: "category empty", u: domain.UpdateProduct{Category: ptr("")}, wantErr: true, wantField: "category"},
		{name: "category too long", u: domain.UpdateProduct{Category: ptr(runes("c", domain.MaxCategoryLen+1))}, wantErr: true, wantField: "category"},
		{name: "price 0", u: domain.UpdateProduct{PriceCents: ptr[int64](0)}},
		{name: "price 10^11", u: domain.UpdateProduct{PriceCents: ptr[int64](domain.MaxPriceCents)}},
		{name: "price 10^11+1", u: domain.UpdateProduct{PriceCents: ptr[int64](domain.MaxPriceCents + 1)}, wantErr: true, wantField: "price_cents"},
		{name: "price negative", u: domain.UpdateProduct{PriceCents: ptr[int64](-5)}, wantErr: true, wantField: "price_cents"},
		{name: "attributes empty clears", u: domain.UpdateProduct{Attributes: ptr(map[string]string{})}},
		{name: "attributes nil map clears", u: domain.UpdateProduct{Attributes: ptr[map[string]string](nil)}},
		{name: "attributes too many", u: domain.UpdateProduct{Attributes: ptr(attrs(domain.MaxAttributes + 1))}, wantErr: true, wantField: "attributes"},
		{name: "attribute value too long", u: domain.UpdateProduct{Attributes: ptr(map[string]string{"k": runes("v", domain.MaxAttributeValLen+1)})}, wantErr: true, wantField: "attributes.k"},
		{name: "valid field with an invalid one", u: domain.UpdateProduct{Name: ptr("ok"), PriceCents: ptr[int64](-1)}, wantErr: true, wantField: "price_cents"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.u.Validate()
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			requireInvalid(t, err, tc.wantField)
		})
	}
}
