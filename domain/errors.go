package domain

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code. Clients match on it, so a
// code's spelling never changes once published.
type Code string

// The codes of the HTTP contract. The transport maps each to one status.
const (
	CodeInvalidRequest       Code = "invalid_request"
	CodeUnauthorized         Code = "unauthorized"
	CodeForbidden            Code = "forbidden"
	CodeNotFound             Code = "not_found"
	CodeUnknownSKU           Code = "unknown_sku"
	CodeAlreadyExists        Code = "already_exists"
	CodeInsufficientStock    Code = "insufficient_stock"
	CodeInvalidTransition    Code = "invalid_transition"
	CodeVersionMismatch      Code = "version_mismatch"
	CodeIdempotencyKeyReused Code = "idempotency_key_reused"
	CodeConflict             Code = "conflict"
)

// Error is the one domain error type. Field names the offending request field
// and SKU the stock keeping unit involved, when there is one.
type Error struct {
	Code    Code
	Message string
	Field   string
	SKU     string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// invalid reports a validation failure of one request field.
func invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or "" when err
// is not a domain error (an infrastructure failure).
func ErrorCode(err error) Code {
	var de *Error
	if errors.As(err, &de) {
		return de.Code
	}
	return ""
}

// CheckVersion enforces optimistic concurrency: when the caller names the
// version it last saw, the aggregate must still be at that version.
func CheckVersion(expected *int64, actual int64) error {
	if expected != nil && *expected != actual {
		return Errorf(CodeVersionMismatch, "expected version %d, current version is %d", *expected, actual)
	}
	return nil
}
