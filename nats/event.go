package nats

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names of the event envelope. Names are case-sensitive on the wire.
const (
	// HeaderMsgID carries the event id; JetStream deduplicates on it within
	// the stream's duplicate window.
	HeaderMsgID            = jetstream.MsgIDHeader
	HeaderEventType        = "Jetcqrs-Event-Type"
	HeaderAggregateType    = "Jetcqrs-Aggregate-Type"
	HeaderAggregateID      = "Jetcqrs-Aggregate-Id"
	HeaderAggregateVersion = "Jetcqrs-Aggregate-Version"
	HeaderSchemaVersion    = "Jetcqrs-Schema-Version"
	// HeaderOccurredAt is RFC 3339 with nanoseconds, in UTC.
	HeaderOccurredAt = "Jetcqrs-Occurred-At"
	// HeaderTraceParent is the W3C trace context header.
	HeaderTraceParent = "traceparent"
	// HeaderCommitPosition is where in the write store's commit order the
	// event was read, when the producer knows it (the CDC relay: the commit
	// LSN of its transaction and its index in it, e.g. "0/1A2B3C4:2").
	// Optional; the relay reads it back from the stream's last message to
	// know where its replication slot's replay is already in the stream.
	HeaderCommitPosition = "Jetcqrs-Commit-Position"
)

// ErrMalformedEvent is matched (errors.Is) by every error Event.Msg and
// DecodeMsg return for an envelope that breaks the contract. Retrying does
// not help; a consumer should dead-letter the message. Use errors.As with
// *MalformedEventError to learn which field is wrong.
var ErrMalformedEvent = errors.New("nats: malformed event")

// MalformedEventError says which part of an event envelope is wrong.
type MalformedEventError struct {
	Field  string // a header name, "subject" or "payload"
	Reason string
}

func (e *MalformedEventError) Error() string {
	return "nats: malformed event: " + e.Field + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrMalformedEvent) true.
func (e *MalformedEventError) Unwrap() error { return ErrMalformedEvent }

func malformed(field, format string, args ...any) error {
	return &MalformedEventError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Event is a domain event as it travels through JetStream: routing and
// identity in headers, the event body as JSON in the message data.
type Event struct {
	// ID is the event's UUID (canonical 8-4-4-4-12 hex form). It is the
	// Nats-Msg-Id verbatim, so a producer must always render a given id
	// the same way (the relay uses PostgreSQL's lowercase text form).
	ID               string
	AggregateType    string // subject token, e.g. "order"
	AggregateID      string
	AggregateVersion int64  // >= 1: the aggregate's version after this event
	EventType        string // subject token, e.g. "OrderPlaced"
	SchemaVersion    int    // >= 1
	OccurredAt       time.Time
	// TraceParent is a W3C traceparent, or "". A malformed value is not
	// sent and not decoded (the W3C spec tells receivers to ignore it), so
	// bad trace data never blocks an event.
	TraceParent string
	// CommitPosition is the HeaderCommitPosition value, or "".
	CommitPosition string
	Payload        []byte // JSON
}

// Msg builds the JetStream message for e: subject
// events.<AggregateType>.<Partition(AggregateID, partitions)>.<EventType>,
// the envelope headers and Payload as data (not copied). It returns an error
// matching ErrMalformedEvent when a field cannot be carried in the subject or
// headers. Payload is not parsed here: it comes from a jsonb column, and
// checking it would cost nearly as much as building the message on the
// relay's hot path; DecodeMsg rejects a payload that is not JSON.
func (e Event) Msg(partitions int) (*natsgo.Msg, error) {
	if partitions < 1 {
		return nil, fmt.Errorf("nats: Event.Msg: partitions must be >= 1, got %d", partitions)
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	// One backing array for all values: this runs once per published event.
	vals := [...]string{
		e.ID, e.EventType, e.AggregateType, e.AggregateID,
		strconv.FormatInt(e.AggregateVersion, 10), strconv.Itoa(e.SchemaVersion),
		e.OccurredAt.UTC().Format(time.RFC3339Nano), e.TraceParent,
	}
	h := make(natsgo.Header, len(vals))
	for i, k := range [...]string{
		HeaderMsgID, HeaderEventType, HeaderAggregateType, HeaderAggregateID,
		HeaderAggregateVersion, HeaderSchemaVersion, HeaderOccurredAt, HeaderTraceParent,
	} {
		if k == HeaderTraceParent && !validTraceParent(e.TraceParent) {
			continue
		}
		h[k] = vals[i : i+1 : i+1]
	}
	if e.CommitPosition != "" {
		h[HeaderCommitPosition] = []string{e.CommitPosition}
	}
	return &natsgo.Msg{
		Subject: Subject(e.AggregateType, Partition(e.AggregateID, partitions), e.EventType),
		Header:  h,
		Data:    e.Payload,
	}, nil
}

func (e Event) validate() error {
	if !validUUID(e.ID) {
		return malformed(HeaderMsgID, "event id %q is not a UUID", e.ID)
	}
	if err := validateToken(e.AggregateType); err != nil {
		return malformed(HeaderAggregateType, "%q: %v", e.AggregateType, err)
	}
	if err := validateToken(e.EventType); err != nil {
		return malformed(HeaderEventType, "%q: %v", e.EventType, err)
	}
	if err := validateHeaderValue(e.AggregateID); err != nil {
		return malformed(HeaderAggregateID, "%q: %v", e.AggregateID, err)
	}
	if e.CommitPosition != "" {
		if err := validateHeaderValue(e.CommitPosition); err != nil {
			return malformed(HeaderCommitPosition, "%q: %v", e.CommitPosition, err)
		}
	}
	if e.AggregateVersion < 1 {
		return malformed(HeaderAggregateVersion, "%d is not >= 1", e.AggregateVersion)
	}
	if e.SchemaVersion < 1 {
		return malformed(HeaderSchemaVersion, "%d is not >= 1", e.SchemaVersion)
	}
	if y := e.OccurredAt.UTC().Year(); e.OccurredAt.IsZero() || y < 1 || y > 9999 {
		return malformed(HeaderOccurredAt, "%v is zero or not representable in RFC 3339", e.OccurredAt)
	}
	return nil
}

// DecodeMsg decodes a message of the EVENTS stream (subject, headers and
// data as stored) into an Event. It is strict: every envelope header must be
// present exactly once and valid, the subject must agree with the headers
// and the payload must be JSON; otherwise the error matches
// ErrMalformedEvent. A missing or malformed traceparent is not an error; it
// decodes as "". Payload aliases data.
func DecodeMsg(subject string, headers natsgo.Header, data []byte) (Event, error) {
	var e Event
	subjType, subjPart, subjEvent, ok := parseSubject(subject)
	if !ok {
		return e, malformed("subject", "%q is not %s.<aggregate_type>.<partition>.<event_type>", subject, SubjectRoot)
	}
	if p, err := strconv.Atoi(subjPart); err != nil || p < 0 || strconv.Itoa(p) != subjPart {
		return e, malformed("subject", "partition token %q of %q is not a non-negative integer", subjPart, subject)
	}

	get := func(name string) (string, error) {
		switch v := headers[name]; len(v) {
		case 0:
			return "", malformed(name, "missing")
		case 1:
			return v[0], nil
		default:
			return "", malformed(name, "present %d times", len(v))
		}
	}
	var err error
	if e.ID, err = get(HeaderMsgID); err != nil {
		return Event{}, err
	}
	if !validUUID(e.ID) {
		return Event{}, malformed(HeaderMsgID, "%q is not a UUID", e.ID)
	}
	if e.AggregateType, err = get(HeaderAggregateType); err != nil {
		return Event{}, err
	}
	if err := validateToken(e.AggregateType); err != nil {
		return Event{}, malformed(HeaderAggregateType, "%q: %v", e.AggregateType, err)
	}
	if e.AggregateType != subjType {
		return Event{}, malformed(HeaderAggregateType, "%q disagrees with subject %q", e.AggregateType, subject)
	}
	if e.EventType, err = get(HeaderEventType); err != nil {
		return Event{}, err
	}
	if err := validateToken(e.EventType); err != nil {
		return Event{}, malformed(HeaderEventType, "%q: %v", e.EventType, err)
	}
	if e.EventType != subjEvent {
		return Event{}, malformed(HeaderEventType, "%q disagrees with subject %q", e.EventType, subject)
	}
	if e.AggregateID, err = get(HeaderAggregateID); err != nil {
		return Event{}, err
	}
	if err := validateHeaderValue(e.AggregateID); err != nil {
		return Event{}, malformed(HeaderAggregateID, "%q: %v", e.AggregateID, err)
	}
	v, err := get(HeaderAggregateVersion)
	if err != nil {
		return Event{}, err
	}
	if e.AggregateVersion, err = strconv.ParseInt(v, 10, 64); err != nil || e.AggregateVersion < 1 ||
		strconv.FormatInt(e.AggregateVersion, 10) != v {
		return Event{}, malformed(HeaderAggregateVersion, "%q is not an integer >= 1", v)
	}
	if v, err = get(HeaderSchemaVersion); err != nil {
		return Event{}, err
	}
	if e.SchemaVersion, err = strconv.Atoi(v); err != nil || e.SchemaVersion < 1 || strconv.Itoa(e.SchemaVersion) != v {
		return Event{}, malformed(HeaderSchemaVersion, "%q is not an integer >= 1", v)
	}
	if v, err = get(HeaderOccurredAt); err != nil {
		return Event{}, err
	}
	if e.OccurredAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
		return Event{}, malformed(HeaderOccurredAt, "%q is not RFC 3339: %v", v, err)
	}
	e.OccurredAt = e.OccurredAt.UTC()
	if tp := headers[HeaderTraceParent]; len(tp) == 1 && validTraceParent(tp[0]) {
		e.TraceParent = tp[0]
	}
	if cp := headers[HeaderCommitPosition]; len(cp) == 1 {
		e.CommitPosition = cp[0]
	}
	if !json.Valid(data) {
		return Event{}, malformed("payload", "not valid JSON")
	}
	e.Payload = data
	return e, nil
}

// validUUID accepts the canonical textual form, either case.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validateHeaderValue checks that s survives a NATS header round trip
// unchanged: non-empty valid UTF-8, no control characters (CR/LF would end
// the header), no leading or trailing whitespace (the parser trims it).
func validateHeaderValue(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return errors.New("contains a control character")
		}
	}
	if strings.TrimSpace(s) != s {
		return errors.New("has leading or trailing whitespace")
	}
	return nil
}

// validTraceParent checks the W3C Trace Context traceparent format:
// version-traceid-parentid-flags in lowercase hex, with non-zero ids;
// versions after 00 may append further "-" fields.
func validTraceParent(s string) bool {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, traceID, parentID, flags := s[0:2], s[3:35], s[36:52], s[53:55]
	if !isLowerHex(version) || version == "ff" || !isLowerHex(traceID) || !isLowerHex(parentID) || !isLowerHex(flags) {
		return false
	}
	if traceID == strings.Repeat("0", 32) || parentID == strings.Repeat("0", 16) {
		return false
	}
	if len(s) == 55 {
		return true
	}
	if version == "00" || s[55] != '-' {
		return false
	}
	for i := 56; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
