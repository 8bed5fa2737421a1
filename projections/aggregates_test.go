package projections_test

import (
	"testing"

	"github.com/jetcqrs/jetcqrs/projections"
)

func TestAggregatesYieldsEachEventsAggregateInOrder(t *testing.T) {
	t.Parallel()
	events := []projections.Envelope{
		{AggregateType: "order", AggregateID: "o-1"},
		{AggregateType: "product", AggregateID: "P-1"},
		{AggregateType: "order", AggregateID: "o-1"},
	}
	var got [][2]string
	for typ, id := range projections.Aggregates(events) {
		got = append(got, [2]string{typ, id})
		if len(got) == 2 {
			break // stopping early must not panic
		}
	}
	if len(got) != 2 || got[0] != [2]string{"order", "o-1"} || got[1] != [2]string{"product", "P-1"} {
		t.Fatalf("got %v", got)
	}
}
