package projections

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// The order view's encoder writes exactly what json.Marshal writes: the
// query API serves the stored bytes as they are, and old and new
// generations must read the same.
func TestEncodeOrderViewIsJSONMarshal(t *testing.T) {
	base := time.Date(2026, 12, 8, 1, 2, 3, 456789000, time.UTC)
	strs := []string{"", "o-1", "plain ASCII ~!", `quote"`, `back\slash`, "<b>&amp;</b>", "tab\tnew\nline\x00",
		"é ü 漢字", "\u2028\u2029", "bad \xff utf-8", "\x7f del", "emoji 🙂"}
	times := []time.Time{base, {}, base.Truncate(time.Second), time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		base.In(time.FixedZone("", 5*3600+30*60)), base.In(time.FixedZone("", -(23*3600 + 59*60))),
		base.In(time.FixedZone("", 24*3600)), base.In(time.FixedZone("", 3600+7))}
	ints := []int64{0, 1, -1, 42, math.MaxInt64, math.MinInt64}
	views := []OrderView{{}, {Items: []OrderLineView{}}}
	for i, s := range strs {
		views = append(views, OrderView{OrderID: s, UserID: strs[(i+1)%len(strs)], Status: strs[(i+2)%len(strs)],
			Items:      []OrderLineView{{SKU: s, Quantity: ints[i%len(ints)], PriceCents: ints[(i+3)%len(ints)]}, {SKU: "sku-2", Quantity: 2}},
			TotalCents: ints[(i+1)%len(ints)], Version: ints[(i+4)%len(ints)],
			PlacedAt: times[i%len(times)], UpdatedAt: times[(i+5)%len(times)]})
	}
	for _, tm := range times {
		views = append(views, OrderView{OrderID: "o", PlacedAt: tm, UpdatedAt: base})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		v := OrderView{OrderID: randString(rng), UserID: randString(rng), Status: randString(rng),
			TotalCents: rng.Int64() - rng.Int64(), Version: rng.Int64N(1000),
			PlacedAt:  time.Unix(rng.Int64N(1<<35)-1<<34, rng.Int64N(1e9)).In(time.FixedZone("", 60*(rng.IntN(48*60)-24*60))),
			UpdatedAt: time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9)).UTC()}
		for range rng.IntN(4) {
			v.Items = append(v.Items, OrderLineView{SKU: randString(rng), Quantity: rng.Int64N(100), PriceCents: rng.Int64()})
		}
		views = append(views, v)
	}
	for i, v := range views {
		want, wantErr := json.Marshal(v)
		got, gotErr := encodeOrderView(v)
		if (wantErr != nil) != (gotErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("view %d: encodeOrderView = %s, %v; json.Marshal = %s, %v", i, got, gotErr, want, wantErr)
		}
	}
}

func randString(rng *rand.Rand) string {
	const alphabet = "abcXYZ019-_ ~\"\\<>&\t\x00\x7fé漢\u2028🙂\xff"
	b := make([]byte, 0, 16)
	for range rng.IntN(12) {
		i := rng.IntN(len(alphabet))
		b = append(b, alphabet[i]) // bytes, so that UTF-8 is broken at times too
	}
	if rng.IntN(2) == 0 {
		return fmt.Sprintf("o-%d", rng.Int64())
	}
	return string(b)
}

// The list member is built by hand; it is the format its doc states.
func TestOrderListMemberFormat(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	times := []time.Time{{}, time.Unix(0, 0), time.Unix(-1, 999), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}
	for range 1000 {
		times = append(times, time.Unix(rng.Int64N(1<<40)-1<<39, rng.Int64N(1e9)))
	}
	for _, tm := range times {
		want := fmt.Sprintf("%016x%03d|%s", uint64(tm.UnixMicro())^(1<<63), tm.Nanosecond()%1000, "o-7")
		if got := OrderListMember(tm, "o-7"); got != want {
			t.Fatalf("OrderListMember(%s) = %q, want %q", tm, got, want)
		}
	}
}
