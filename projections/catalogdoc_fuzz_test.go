package projections

import (
	"errors"
	"testing"

	"github.com/jetcqrs/jetcqrs/domain"
)

// FuzzDecodeCatalogEvents checks that any payload either decodes into a change
// of the envelope's SKU or is reported as poison naming the event; it never
// panics and never yields a change for another SKU.
func FuzzDecodeCatalogEvents(f *testing.F) {
	f.Add(domain.AggregateProduct, domain.EventProductCreated, "SKU-1", 1, []byte(`{"sku":"SKU-1","name":"Kettle","price_cents":3000,"version":1}`))
	f.Add(domain.AggregateInventory, domain.EventInventoryReserved, "SKU-1", 1, []byte(`{"sku":"SKU-1","on_hand":5,"reserved":2,"available":3,"version":4}`))
	f.Add(domain.AggregateInventory, domain.EventInventoryAdjusted, "SKU-1", 2, []byte(`{"sku":"SKU-1"}`))
	f.Add(domain.AggregateProduct, domain.EventProductUpdated, "SKU-1", 1, []byte(`{"sku":"SKU-2"}`))
	f.Add(domain.AggregateProduct, domain.EventProductUpdated, "SKU-1", 1, []byte(`null`))
	f.Add(domain.AggregateOrder, domain.EventOrderPlaced, "x", 1, []byte(`{`))
	f.Fuzz(func(t *testing.T, aggType, eventType, aggID string, schema int, payload []byte) {
		e := Envelope{Seq: 42, AggregateType: aggType, AggregateID: aggID, EventType: eventType, SchemaVersion: schema, Payload: payload}
		changes, err := DecodeCatalogEvents([]Envelope{e})
		if err != nil {
			var pe *PoisonError
			if !errors.As(err, &pe) || pe.Seq != 42 || pe.Reason == "" {
				t.Fatalf("error %v is not a *PoisonError for seq 42 with a reason", err)
			}
			return
		}
		for _, c := range changes {
			if c.SKU != aggID || c.Seq != 42 || (c.Product == nil) == (c.Stock == nil) {
				t.Fatalf("change %+v of envelope %+v", c, e)
			}
		}
	})
}
