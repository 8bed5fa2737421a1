package projections

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// encodeOrderView returns the bytes json.Marshal(v) gives, without its
// reflection: an order model encodes one view per event it applies, and a
// rebuild applies every order event of the stream. Whatever the fast path
// does not cover exactly (a string json.Marshal would escape, a time it
// would refuse) goes through json.Marshal itself.
func encodeOrderView(v OrderView) ([]byte, error) {
	if !jsonPlainTime(v.PlacedAt) || !jsonPlainTime(v.UpdatedAt) {
		return json.Marshal(v)
	}
	b := make([]byte, 0, 192+64*len(v.Items))
	b = append(b, `{"order_id":`...)
	b = appendJSONString(b, v.OrderID)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, v.UserID)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, v.Status)
	b = append(b, `,"items":`...)
	if v.Items == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, it := range v.Items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"sku":`...)
			b = appendJSONString(b, it.SKU)
			b = append(b, `,"quantity":`...)
			b = strconv.AppendInt(b, it.Quantity, 10)
			b = append(b, `,"price_cents":`...)
			b = strconv.AppendInt(b, it.PriceCents, 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"total_cents":`...)
	b = strconv.AppendInt(b, v.TotalCents, 10)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, v.Version, 10)
	b = append(b, `,"placed_at":"`...)
	b = v.PlacedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","updated_at":"`...)
	b = v.UpdatedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	return b, nil
}

// jsonPlainTime: time.Time's MarshalJSON gives t in RFC 3339 with
// nanoseconds, quoted, for years 0–9999 and zone offsets of whole minutes
// (anything else is an error or is written otherwise).
func jsonPlainTime(t time.Time) bool {
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off%60 == 0 && off > -24*3600 && off < 24*3600
}

// appendJSONString appends s as json.Marshal writes a string: printable
// ASCII other than the characters it escapes is copied as it is; any other
// string is left to json.Marshal (HTML escaping, invalid UTF-8, U+2028).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
