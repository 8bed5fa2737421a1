// Package httpx holds what the command and query APIs share: RFC 9457 problem
// responses and the one mapping from errors to them, strict JSON decoding,
// bearer authentication, and request metrics.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/jetcqrs/jetcqrs/domain"
)

// Codes of transport-level problems (the domain's codes cover the rest).
const (
	CodePayloadTooLarge      domain.Code = "payload_too_large"
	CodeUnsupportedMediaType domain.Code = "unsupported_media_type"
	CodeMethodNotAllowed     domain.Code = "method_not_allowed"
	CodeUnavailable          domain.Code = "unavailable"
	CodeInternal             domain.Code = "internal"
	CodeConsistencyTimeout   domain.Code = "consistency_timeout"
	// CodeHubUnreachable: an edge node cannot pass a command on to the hub.
	CodeHubUnreachable domain.Code = "hub_unreachable"
)

// Problem is an RFC 9457 problem detail with the stable code clients match on.
type Problem struct {
	Type     string      `json:"type"`
	Title    string      `json:"title"`
	Status   int         `json:"status"`
	Detail   string      `json:"detail,omitempty"`
	Code     domain.Code `json:"code"`
	Instance string      `json:"instance,omitempty"`
	Field    string      `json:"field,omitempty"`
	SKU      string      `json:"sku,omitempty"`
}

var statusOf = map[domain.Code]int{
	domain.CodeInvalidRequest:       http.StatusBadRequest,
	domain.CodeUnauthorized:         http.StatusUnauthorized,
	domain.CodeForbidden:            http.StatusForbidden,
	domain.CodeNotFound:             http.StatusNotFound,
	domain.CodeUnknownSKU:           http.StatusNotFound,
	CodeMethodNotAllowed:            http.StatusMethodNotAllowed,
	domain.CodeAlreadyExists:        http.StatusConflict,
	domain.CodeInsufficientStock:    http.StatusConflict,
	domain.CodeInvalidTransition:    http.StatusConflict,
	domain.CodeConflict:             http.StatusConflict,
	domain.CodeVersionMismatch:      http.StatusPreconditionFailed,
	CodePayloadTooLarge:             http.StatusRequestEntityTooLarge,
	CodeUnsupportedMediaType:        http.StatusUnsupportedMediaType,
	domain.CodeIdempotencyKeyReused: http.StatusUnprocessableEntity,
	CodeInternal:                    http.StatusInternalServerError,
	CodeUnavailable:                 http.StatusServiceUnavailable,
	CodeConsistencyTimeout:          http.StatusServiceUnavailable,
	CodeHubUnreachable:              http.StatusServiceUnavailable,
}

// StatusOf returns the HTTP status of a problem code.
func StatusOf(code domain.Code) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// WriteProblem writes a problem+json response.
func WriteProblem(w http.ResponseWriter, r *http.Request, code domain.Code, detail string) {
	writeProblem(w, r, Problem{Code: code, Detail: detail})
}

func writeProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	p.Status = StatusOf(p.Code)
	p.Type = "urn:jetcqrs:problem:" + string(p.Code)
	p.Title = http.StatusText(p.Status)
	if r != nil {
		p.Instance = r.URL.Path
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if p.Status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// WriteError maps err to its problem response: domain errors to their code's
// status, a cancelled or timed-out request to 503, anything else to 500 with
// no internal detail (it is logged instead).
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	var de *domain.Error
	switch {
	case errors.As(err, &de):
		writeProblem(w, r, Problem{Code: de.Code, Detail: de.Message, Field: de.Field, SKU: de.SKU})
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		writeProblem(w, r, Problem{Code: CodeUnavailable, Detail: "the request did not finish in time; retry it"})
	default:
		logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeProblem(w, r, Problem{Code: CodeInternal, Detail: "internal error; it has been logged"})
	}
}

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		WriteProblem(w, nil, CodeInternal, "encoding the response failed")
		return
	}
	WriteRawJSON(w, status, body)
}

var newline = []byte{'\n'}

// WriteRawJSON writes body, JSON encoded already, with status.
func WriteRawJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write(newline)
}

// NotFound and MethodNotAllowed answer unknown routes with problems.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteProblem(w, r, domain.CodeNotFound, "no such resource: "+r.URL.Path)
}

// MethodNotAllowed answers a known path with the wrong method.
func MethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	WriteProblem(w, r, CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
}
