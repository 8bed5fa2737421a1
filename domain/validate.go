package domain

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the HTTP contract, enforced by the aggregates themselves so that no
// adapter can store what the contract forbids.
const (
	MaxSKULen          = 64
	MaxNameLen         = 200
	MaxDescriptionLen  = 5000
	MaxCategoryLen     = 100
	MaxPriceCents      = 100_000_000_000 // 10^11
	MaxAttributes      = 50
	MaxAttributeKeyLen = 64
	MaxAttributeValLen = 500
	MinQuantity        = 1
	MaxQuantity        = 1000
	MaxOrderItems      = 100
	MaxUserIDLen       = 128
	MaxReasonLen       = 500
	MaxPaymentTokenLen = 512
	MaxAdjustment      = 1_000_000_000
	MaxOnHand          = 1_000_000_000_000
)

// ValidSKU reports whether s matches [A-Za-z0-9._-]{1,64}.
func ValidSKU(s string) bool {
	if len(s) == 0 || len(s) > MaxSKULen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func checkSKU(field, sku string) error {
	if !ValidSKU(sku) {
		return invalid(field, "must match [A-Za-z0-9._-]{1,64}")
	}
	return nil
}

// checkText validates a free-text field: valid UTF-8, no control characters
// other than newlines and tabs when multiline, and a length in runes within
// [min, max].
func checkText(field, s string, min, max int, multiline bool) error {
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	n := utf8.RuneCountInString(s)
	if n < min {
		return invalid(field, "must not be empty")
	}
	if n > max {
		return invalid(field, "must have at most %d characters", max)
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t' || r == '\r')) {
			return invalid(field, "must not contain control characters")
		}
	}
	if min > 0 && strings.TrimSpace(s) == "" {
		return invalid(field, "must not be blank")
	}
	return nil
}

func checkPrice(field string, cents int64) error {
	if cents < 0 || cents > MaxPriceCents {
		return invalid(field, "must be between 0 and %d", int64(MaxPriceCents))
	}
	return nil
}

func checkAttributes(field string, attrs map[string]string) error {
	if len(attrs) > MaxAttributes {
		return invalid(field, "must have at most %d entries", MaxAttributes)
	}
	for k, v := range attrs {
		if err := checkText(field+"."+k, k, 1, MaxAttributeKeyLen, false); err != nil {
			return invalid(field, "keys must be 1..%d printable characters", MaxAttributeKeyLen)
		}
		if err := checkText(field+"."+k, v, 0, MaxAttributeValLen, false); err != nil {
			return err
		}
	}
	return nil
}

func cloneAttributes(attrs map[string]string) map[string]string {
	out := make(map[string]string, len(attrs))
	for k, v := range attrs {
		out[k] = v
	}
	return out
}
