package projections

import (
	"context"
	"errors"
	"net"
	"strings"
)

// ReplyError carries, beside a store's error, the store's reply named in one
// word: a Redis error code (MISCONF, NOAUTH), an Elasticsearch error type, a
// ClickHouse exception name. The runtime labels its store-error metric with
// it, so the word must come from a small set.
type ReplyError struct {
	Reply string
	Err   error
}

func (e *ReplyError) Error() string { return e.Err.Error() }

func (e *ReplyError) Unwrap() error { return e.Err }

// WithReply marks err with the store's reply (see ReplyError).
func WithReply(reply string, err error) error { return &ReplyError{Reply: reply, Err: err} }

// maxReplyLen bounds a reply label.
const maxReplyLen = 48

// StoreReply names the store's answer in err for metrics and /readyz: the
// reply an adapter marked with WithReply (cut to letters, digits, _ and -),
// else "timeout", "canceled" or "network" for a failure to reach the store,
// else "error".
func StoreReply(err error) string {
	var re *ReplyError
	if errors.As(err, &re) {
		if r := sanitizeReply(re.Reply); r != "" {
			return r
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ne):
		return "network"
	}
	return "error"
}

func sanitizeReply(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() == maxReplyLen {
			break
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
