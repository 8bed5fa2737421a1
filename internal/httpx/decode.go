package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"unicode/utf8"

	"github.com/jetcqrs/jetcqrs/domain"
)

// MaxBodyBytes is the largest request body accepted (1 MiB).
const MaxBodyBytes = 1 << 20

// ReadBody reads the whole request body, refusing bodies over MaxBodyBytes and
// non-JSON content types. An empty body is returned as nil.
func ReadBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &domain.Error{Code: CodePayloadTooLarge, Message: fmt.Sprintf("request body exceeds %d bytes", MaxBodyBytes)}
		}
		return nil, &domain.Error{Code: domain.CodeInvalidRequest, Message: "reading the request body failed: " + err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return nil, &domain.Error{Code: CodeUnsupportedMediaType, Message: fmt.Sprintf("Content-Type must be application/json, got %q", ct)}
	}
	return body, nil
}

// DecodeStrict decodes one JSON object from body into dst. It refuses invalid
// UTF-8 (which encoding/json would silently replace), unknown fields, wrong
// types, numbers out of range and trailing data, each with a detail naming what
// is wrong. A nil body decodes as {} when allowEmpty, and is refused otherwise.
func DecodeStrict(body []byte, dst any, allowEmpty bool) error {
	if body == nil {
		if allowEmpty {
			return nil
		}
		return &domain.Error{Code: domain.CodeInvalidRequest, Message: "a JSON body is required"}
	}
	if !utf8.Valid(body) {
		return &domain.Error{Code: domain.CodeInvalidRequest, Message: "request body is not valid UTF-8"}
	}
	if err := checkKeys(body, reflect.TypeOf(dst)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &domain.Error{Code: domain.CodeInvalidRequest, Message: "unexpected data after the JSON object"}
	}
	return nil
}

func decodeError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return &domain.Error{Code: domain.CodeInvalidRequest, Message: fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn)}
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return &domain.Error{Code: domain.CodeInvalidRequest, Message: fmt.Sprintf("the body must be a JSON object, got %s", typ.Value)}
		}
		return &domain.Error{Code: domain.CodeInvalidRequest, Field: field,
			Message: fmt.Sprintf("must be %s, got JSON %s", jsonKind(typ.Type), typ.Value)}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &domain.Error{Code: domain.CodeInvalidRequest, Message: "truncated JSON"}
	default:
		// Unknown fields and other decoder complaints ("json: unknown field \"x\"").
		return &domain.Error{Code: domain.CodeInvalidRequest, Message: err.Error()}
	}
}

// jsonKind names the JSON a Go type expects, in the client's terms.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	default:
		return "a different JSON type"
	}
}
