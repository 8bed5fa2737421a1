package nats

import (
	"errors"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SubjectRoot is the first token of every event subject; the EVENTS stream
// binds SubjectRoot + ".>".
const SubjectRoot = "events"

// Partition maps an aggregate id to its partition in [0, partitions):
// the 32-bit FNV-1a hash of the id's bytes (offset basis 2166136261, prime
// 16777619, as in hash/fnv.New32a) modulo partitions.
//
// This is a wire contract: it decides which subject, hence which consumer,
// sees an aggregate's events, and per-aggregate order holds only because
// every event of an aggregate lands in the same partition. It must never
// change for an existing stream; tests pin golden values.
//
// Partition panics if partitions < 1, like a division by zero.
func Partition(aggregateID string, partitions int) int {
	if partitions < 1 {
		panic("nats: Partition: partitions must be >= 1, got " + strconv.Itoa(partitions))
	}
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for i := 0; i < len(aggregateID); i++ {
		h ^= uint32(aggregateID[i])
		h *= prime32
	}
	return int(h % uint32(partitions))
}

// Subject is the subject an event is published on:
// events.<aggregateType>.<partition>.<eventType>, e.g.
// events.order.3.OrderPlaced. It does not validate its tokens; Event.Msg
// does.
func Subject(aggregateType string, partition int, eventType string) string {
	return SubjectRoot + "." + aggregateType + "." + strconv.Itoa(partition) + "." + eventType
}

// PartitionFilter is the consumer filter subject matching every event of
// one aggregate type in one partition, e.g. events.order.3.*.
func PartitionFilter(aggregateType string, partition int) string {
	return SubjectRoot + "." + aggregateType + "." + strconv.Itoa(partition) + ".*"
}

// PartitionFilters is the filter set of a multi-filter consumer that reads
// one partition across several aggregate types, e.g. partition 3 of order
// and inventory: [events.order.3.* events.inventory.3.*]. Each aggregate's
// events still arrive in stream order.
func PartitionFilters(partition int, aggregateTypes ...string) []string {
	out := make([]string, len(aggregateTypes))
	for i, t := range aggregateTypes {
		out[i] = PartitionFilter(t, partition)
	}
	return out
}

// validateToken checks that s can be one subject token: non-empty valid
// UTF-8 without '.', '*', '>', whitespace or control characters.
func validateToken(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>':
			return errors.New("contains " + strconv.QuoteRune(r) + ", which NATS subjects reserve")
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return errors.New("contains whitespace or a control character")
		}
	}
	return nil
}

// parseSubject splits an event subject into its three variable tokens.
func parseSubject(subject string) (aggregateType, partition, eventType string, ok bool) {
	rest, ok := strings.CutPrefix(subject, SubjectRoot+".")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}
