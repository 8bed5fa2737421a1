package bench

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
)

// The mixed workload's operations. Reads are public except an order, which
// its owner reads; writes are a customer's own.
const (
	opOrder     = "order"     // GET /v1/orders/{id}
	opProduct   = "product"   // GET /v1/products/{sku}
	opInventory = "inventory" // GET /v1/inventory/{sku}
	opSearch    = "search"    // GET /v1/products?q=… with facets
	opPlace     = "place"     // POST /v1/orders
	opPay       = "pay"       // POST /v1/orders/{id}/pay
	opCancel    = "cancel"    // POST /v1/orders/{id}/cancel
)

var (
	readOps  = []string{opOrder, opProduct, opInventory, opSearch}
	writeOps = []string{opPlace, opPay, opCancel}
)

// Mix is the share of each operation among the reads or the writes, in
// percent (any positive weights: they are normalized).
type Mix map[string]float64

// DefaultReadMix and DefaultWriteMix are the workload the system exists
// for: mostly point reads, some faceted searches; mostly new orders.
var (
	DefaultReadMix  = Mix{opOrder: 40, opProduct: 25, opInventory: 20, opSearch: 15}
	DefaultWriteMix = Mix{opPlace: 75, opPay: 20, opCancel: 5}
)

// ParseMix reads "order=40,product=25,…" and checks that every name is one
// of ops.
func ParseMix(s string, ops []string) (Mix, error) {
	m := Mix{}
	for _, f := range strings.Split(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(f), "=")
		v, err := strconv.ParseFloat(w, 64)
		known := false
		for _, o := range ops {
			known = known || o == name
		}
		if !ok || err != nil || v < 0 || !known {
			return nil, fmt.Errorf("want name=weight pairs of %s separated by commas, got %q", strings.Join(ops, ", "), f)
		}
		m[name] = v
	}
	total := 0.0
	for _, v := range m {
		total += v
	}
	if total <= 0 {
		return nil, fmt.Errorf("mix %q has no positive weight", s)
	}
	return m, nil
}

// picker draws operations in the proportions of a Mix.
type picker struct {
	ops []string
	cum []float64 // cumulative shares ending at 1
}

func newPicker(m Mix, ops []string) picker {
	var p picker
	total := 0.0
	for _, o := range ops {
		total += m[o]
	}
	acc := 0.0
	for _, o := range ops {
		if m[o] <= 0 {
			continue
		}
		acc += m[o] / total
		p.ops, p.cum = append(p.ops, o), append(p.cum, acc)
	}
	p.cum[len(p.cum)-1] = 1
	return p
}

func (p picker) pick(u float64) string {
	for i, c := range p.cum {
		if u < c {
			return p.ops[i]
		}
	}
	return p.ops[len(p.ops)-1]
}

// mixedWords are the vocabulary of product names and descriptions and of the
// searches, so that searches match. Words are drawn Zipf-like: a few are in
// many products, most in a few.
var mixedWords = strings.Fields(`
	amber anchor apple arch arrow ash aspen atlas aurora autumn badge bamboo barrel basalt beacon bell berry birch
	blade blossom bolt boulder bramble brass breeze brick bridge bronze brook buckle cabin cactus candle canyon
	canvas cargo cedar cellar chalk charm cherry chestnut cinder citrus clay cliff clover cobalt comet compass copper
	coral cotton crane crater crest crystal cypress dawn delta denim desert dune dusk eagle echo ember emerald falcon
	feather fern field flame flint forest fountain frost garden garnet glacier granite grove harbor hazel heather
	hollow honey horizon indigo iris island ivory jade jasmine juniper kettle lagoon lantern lava lemon lilac linen
	lotus magnet maple marble meadow mesa mint mirror moss mountain nectar nickel nova oak oasis ocean olive onyx
	orchard otter paddle palm pebble pepper pine plum prairie prism quartz quill rain raven reed ridge river robin
	ruby saddle saffron sage sail sand sapphire scarlet shadow shell sierra silk silver slate snow spark spruce
	stone storm summit sun swift thistle thunder timber topaz tulip tundra valley velvet violet walnut wave willow
	wind winter wool zephyr zinc`)

// mixedCategories are the products' categories.
var mixedCategories = []string{"apparel", "books", "garden", "grocery", "home", "kitchen", "music", "office",
	"outdoor", "sports", "tools", "toys"}

// seedProduct is one product the workload creates.
type seedProduct struct {
	SKU         string
	Name        string
	Description string
	Category    string
	PriceCents  int64
	InStock     bool
}

// mixedCatalog returns n products with names and descriptions drawn from
// mixedWords; one in ten has no stock. It is the same for the same n and
// prefix.
func mixedCatalog(n int, prefix string) []seedProduct {
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	zipf := rand.NewZipf(rng, 1.1, 4, uint64(len(mixedWords)-1))
	words := func(k int) string {
		w := make([]string, k)
		for i := range w {
			w[i] = mixedWords[zipf.Uint64()]
		}
		return strings.Join(w, " ")
	}
	out := make([]seedProduct, n)
	for i := range out {
		out[i] = seedProduct{
			SKU:         fmt.Sprintf("%s%05d", prefix, i),
			Name:        words(2 + rng.IntN(2)),
			Description: words(8 + rng.IntN(6)),
			Category:    mixedCategories[rng.IntN(len(mixedCategories))],
			// 1.00 to 999.99, more cheap than dear.
			PriceCents: int64(100+rng.ExpFloat64()*8000)%99900 + 100,
			InStock:    i%10 != 9,
		}
	}
	return out
}

// searchQuery is one combination of words and filters.
type searchQuery struct {
	Words    []string
	Category string
	InStock  bool
	MinPrice int64 // -1: none
	MaxPrice int64 // -1: none
}

// path is the query's request path.
func (q searchQuery) path() string {
	v := url.Values{}
	v.Set("q", strings.Join(q.Words, " "))
	if q.Category != "" {
		v.Set("category", q.Category)
	}
	if q.InStock {
		v.Set("in_stock", "true")
	}
	if q.MinPrice >= 0 {
		v.Set("min_price", strconv.FormatInt(q.MinPrice, 10))
	}
	if q.MaxPrice >= 0 {
		v.Set("max_price", strconv.FormatInt(q.MaxPrice, 10))
	}
	v.Set("limit", "10")
	return "/v1/products?" + v.Encode()
}

// searchPriceBounds are the price filters a search may carry.
var searchPriceBounds = [][2]int64{{-1, 999}, {1000, 4999}, {2000, 10000}, {5000, -1}, {10000, -1}}

// queryTable is n distinct searches, the most popular first, drawn from
// with a Zipf distribution so that a few searches are frequent and most are
// rare, as in production: a cache earns what it would there.
type queryTable struct {
	paths []string
}

// newQueryTable builds n distinct combinations of one or two words and
// filters (category three in ten, in stock three in ten, price one in four).
func newQueryTable(n int) queryTable {
	rng := rand.New(rand.NewPCG(11, uint64(n)))
	zipf := rand.NewZipf(rng, 1.1, 4, uint64(len(mixedWords)-1))
	seen := make(map[string]bool, n)
	t := queryTable{paths: make([]string, 0, n)}
	for len(t.paths) < n {
		q := searchQuery{Words: []string{mixedWords[zipf.Uint64()]}, MinPrice: -1, MaxPrice: -1}
		if rng.IntN(3) == 0 {
			if w := mixedWords[zipf.Uint64()]; w != q.Words[0] {
				q.Words = append(q.Words, w)
			}
		}
		if rng.IntN(10) < 3 {
			q.Category = mixedCategories[rng.IntN(len(mixedCategories))]
		}
		q.InStock = rng.IntN(10) < 3
		if rng.IntN(4) == 0 {
			b := searchPriceBounds[rng.IntN(len(searchPriceBounds))]
			q.MinPrice, q.MaxPrice = b[0], b[1]
		}
		p := q.path()
		if !seen[p] {
			seen[p] = true
			t.paths = append(t.paths, p)
		}
	}
	return t
}

// draw picks a search: rank k with probability proportional to 1/(k+4)^1.07.
func (t queryTable) draw(z *rand.Zipf) string { return t.paths[z.Uint64()] }

func (t queryTable) zipf(rng *rand.Rand) *rand.Zipf {
	return rand.NewZipf(rng, 1.07, 4, uint64(len(t.paths)-1))
}
