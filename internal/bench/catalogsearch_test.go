package bench

import (
	"strings"
	"testing"
	"time"
)

// TestCatalogSearchRuns runs the catalog-search benchmark briefly: six rows,
// every side searched, and the cached store's hit ratio reported.
func TestCatalogSearchRuns(t *testing.T) {
	section, err := CatalogSearch(t.Context(), CatalogSearchConfig{Duration: 300 * time.Millisecond, WriteRates: []int{20}, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	checkSection(t, section)
	var rows []string
	for _, l := range strings.Split(section, "\n") {
		if strings.HasPrefix(l, "| still index |") || strings.HasPrefix(l, "| 20 batches/s") {
			rows = append(rows, l)
		}
	}
	if len(rows) != 6 {
		t.Fatalf("%d result rows, want 6:\n%s", len(rows), section)
	}
	for _, r := range rows {
		if cells := strings.Split(r, "|"); strings.TrimSpace(cells[3]) == "0" {
			t.Errorf("no searches done: %s", r)
		}
	}
	if !strings.HasSuffix(rows[2], "% |") || !strings.HasSuffix(rows[5], "% |") {
		t.Errorf("the cached rows report no hit ratio:\n%s\n%s", rows[2], rows[5])
	}
}
