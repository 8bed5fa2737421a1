package domain_test

import (
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

// TestShipAndCancelAreAllOrNothing: when one line's stock is missing, the
// order and the stock of the other lines are exactly as before the command.
func TestShipAndCancelAreAllOrNothing(t *testing.T) {
	t.Parallel()
	admin := domain.Actor{Subject: "ops", Role: domain.RoleAdmin}
	for _, cmd := range []string{"ship", "cancel"} {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			skus := []string{}
			for sku := range testCatalog() {
				skus = append(skus, sku)
			}
			if len(skus) < 2 {
				t.Fatal("test catalog needs two skus")
			}
			stock := fullStock(t)
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			order, _ := mustPlace(t, "o-1", admin, placeCmd("u1", line(skus[0], 2), line(skus[1], 1)), stock)
			if _, err := order.Pay(admin, now); err != nil {
				t.Fatal(err)
			}
			partial := map[string]*domain.Inventory{skus[0]: stock[skus[0]]}
			beforeOrder, beforeStock := order.Snapshot(), levelsOf(partial)
			var err error
			if cmd == "ship" {
				_, err = order.Ship(admin, partial, now.Add(time.Minute))
			} else {
				_, err = order.Cancel(admin, "changed mind", partial, now.Add(time.Minute))
			}
			requireCode(t, err, domain.CodeConflict)
			requireEqual(t, "order after failed "+cmd, order.Snapshot(), beforeOrder)
			requireEqual(t, "stock after failed "+cmd, levelsOf(partial), beforeStock)
		})
	}
}
