package nats

import (
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
)

// Golden partitions: these values are part of the wire contract. If this
// test fails, Partition changed and existing streams would be re-routed.
func TestPartitionGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id         string
		partitions int
		want       int
	}{
		{"", 16, 5},
		{"a", 16, 12},
		{"order-0001", 16, 1},
		{"0b9e6a4e-2f1c-4b8e-9d3a-7c1f2e4d5a6b", 16, 3},
		{"SKU-12345", 16, 8},
		{"ü", 16, 10},
		{"order-0001", 7, 6},
		{"a", 7, 5},
		{"0b9e6a4e-2f1c-4b8e-9d3a-7c1f2e4d5a6b", 1024, 979},
		{"SKU-12345", 1024, 776},
		{"SKU-12345", 1, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.id, tt.partitions), func(t *testing.T) {
			t.Parallel()
			if got := Partition(tt.id, tt.partitions); got != tt.want {
				t.Fatalf("Partition(%q, %d) = %d, want %d", tt.id, tt.partitions, got, tt.want)
			}
		})
	}
}

func TestPartitionIsFNV1aModP(t *testing.T) {
	t.Parallel()
	counts := make([]int, 16)
	for i := range 10000 {
		id := newUUID()
		if i%2 == 0 {
			id = fmt.Sprintf("sku-%d", i)
		}
		h := fnv.New32a()
		h.Write([]byte(id))
		for _, p := range []int{1, 2, 3, 16, 1024} {
			got := Partition(id, p)
			if want := int(h.Sum32() % uint32(p)); got != want {
				t.Fatalf("Partition(%q, %d) = %d, want FNV-1a mod P = %d", id, p, got, want)
			}
			if got < 0 || got >= p {
				t.Fatalf("Partition(%q, %d) = %d out of range", id, p, got)
			}
		}
		counts[Partition(id, 16)]++
	}
	for p, n := range counts {
		if n < 10000/16/2 { // a usable hash spreads ids: no partition under half its share
			t.Errorf("partition %d got %d of 10000 ids: %v", p, n, counts)
		}
	}
}

func TestPartitionPanicsWithoutPartitions(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("Partition(id, 0) did not panic")
		}
	}()
	Partition("x", 0)
}

func TestSubjectAndFilters(t *testing.T) {
	t.Parallel()
	if got, want := Subject("order", 3, "OrderPlaced"), "events.order.3.OrderPlaced"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
	if got, want := PartitionFilter("inventory", 15), "events.inventory.15.*"; got != want {
		t.Errorf("PartitionFilter = %q, want %q", got, want)
	}
	if got, want := PartitionFilters(3, "order", "inventory"), []string{"events.order.3.*", "events.inventory.3.*"}; !slices.Equal(got, want) {
		t.Errorf("PartitionFilters = %q, want %q", got, want)
	}
	typ, part, ev, ok := parseSubject(Subject("product", 12, "ProductCreated"))
	if !ok || typ != "product" || part != "12" || ev != "ProductCreated" {
		t.Errorf("parseSubject(Subject(...)) = %q %q %q %v", typ, part, ev, ok)
	}
	// Every event subject is matched by its partition's filter and bound by the stream.
	sub := Subject("order", 3, "OrderPlaced")
	if !subjectMatches(PartitionFilter("order", 3), sub) || subjectMatches(PartitionFilter("order", 4), sub) {
		t.Errorf("filter/subject mismatch for %s", sub)
	}
	if !subjectMatches(SubjectRoot+".>", sub) {
		t.Errorf("%s not under %s.>", sub, SubjectRoot)
	}
}

// subjectMatches is NATS wildcard matching, for the test above.
func subjectMatches(filter, subject string) bool {
	f, s := splitDots(filter), splitDots(subject)
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func TestValidateToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		token string
		ok    bool
	}{
		{"order", true},
		{"OrderPlaced", true},
		{"InventoryReserved", true},
		{"line_item-2", true},
		{"", false},
		{"order.placed", false},
		{"order*", false},
		{">", false},
		{"Order Placed", false},
		{"tab\there", false},
		{"new\nline", false},
		{"nbsp\u00a0", false},
		{"nul\x00", false},
		{"bad\xffutf8", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.token), func(t *testing.T) {
			t.Parallel()
			if err := validateToken(tt.token); (err == nil) != tt.ok {
				t.Fatalf("validateToken(%q) = %v, want ok=%v", tt.token, err, tt.ok)
			}
		})
	}
}
