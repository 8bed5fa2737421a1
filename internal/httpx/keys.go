package httpx

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/jetcqrs/jetcqrs/domain"
)

// checkKeys walks the JSON in body against the Go type t and refuses what
// encoding/json would quietly accept: object keys that match a field only
// when case is ignored ("SKU" for "sku"), and duplicate keys (where the last
// one would win). Keys of map-typed fields are data and may be anything but
// duplicates. It returns nil for input it cannot tokenize; the decoder then
// reports the syntax error.
func checkKeys(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	err := walkValue(dec, t, "")
	if _, ok := err.(*domain.Error); ok {
		return err
	}
	return nil
}

func walkValue(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, t, path)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := walkValue(dec, elem, path); err != nil {
				return err
			}
		}
		_, err := dec.Token()
		return err
	}
	return nil
}

func walkObject(dec *json.Decoder, t reflect.Type, path string) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		field := joinPath(path, key)
		if seen[key] {
			return &domain.Error{Code: domain.CodeInvalidRequest, Field: field, Message: "appears more than once"}
		}
		seen[key] = true
		var next reflect.Type
		switch {
		case t != nil && t.Kind() == reflect.Struct:
			f, ok := fieldByExactName(t, key)
			if !ok {
				return &domain.Error{Code: domain.CodeInvalidRequest, Field: field, Message: fmt.Sprintf("unknown field %q", key)}
			}
			next = f
		case t != nil && t.Kind() == reflect.Map:
			next = t.Elem()
		}
		if err := walkValue(dec, next, field); err != nil {
			return err
		}
	}
	_, err := dec.Token()
	return err
}

// fieldByExactName finds the field whose JSON name is exactly name.
func fieldByExactName(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
