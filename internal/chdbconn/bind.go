// Package chdbconn runs code written for a ClickHouse server against chDB, a
// current ClickHouse engine in-process: Conn is a clickhouse-go driver.Conn
// over a chDB session, so a store's own SQL runs unchanged on both engines.
// It exists for tests and is built only with -tags chdb (bind.go, which needs
// no engine, is always built).
//
// chdb-go loads libchdb.so when the program starts, from CHDB_LIB_PATH or
// else /usr/local/lib/libchdb.so (`scripts/services.sh tests` installs it there), and
// panics when it cannot: a test binary built with the tag needs the library,
// the server binary never imports this package.
package chdbconn

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// bind replaces each ? placeholder of query, outside quoted strings and
// identifiers, with the literal of the matching argument, as clickhouse-go
// binds positional arguments on the client.
func bind(query string, args ...any) (string, error) {
	var b strings.Builder
	next := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch c {
		case '\'', '`', '"':
			end, err := quotedEnd(query, i)
			if err != nil {
				return "", err
			}
			b.WriteString(query[i:end])
			i = end - 1
		case '?':
			if next == len(args) {
				return "", fmt.Errorf("chdbconn: bind: more placeholders than the %d arguments", len(args))
			}
			lit, err := literal(args[next])
			if err != nil {
				return "", fmt.Errorf("chdbconn: bind argument %d: %w", next+1, err)
			}
			b.WriteString(lit)
			next++
		default:
			b.WriteByte(c)
		}
	}
	if next != len(args) {
		return "", fmt.Errorf("chdbconn: bind: %d arguments for %d placeholders", len(args), next)
	}
	return b.String(), nil
}

// quotedEnd returns the index just past the quoted run that starts at
// query[start]; a backslash escapes the next byte, and a doubled quote is a
// quote, as ClickHouse reads them.
func quotedEnd(query string, start int) (int, error) {
	q := query[start]
	for i := start + 1; i < len(query); i++ {
		switch query[i] {
		case '\\':
			i++
		case q:
			if i+1 < len(query) && query[i+1] == q {
				i++
				continue
			}
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("chdbconn: bind: unterminated %c at offset %d", q, start)
}

var stringEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\'`)

// literal is v as a ClickHouse SQL literal. Times become DateTime values of
// the same instant at whole seconds, which a Date or DateTime column takes.
func literal(v any) (string, error) {
	if t, ok := v.(time.Time); ok {
		return fmt.Sprintf("toDateTime(%d, 'UTC')", t.Unix()), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String:
		return "'" + stringEscaper.Replace(rv.String()) + "'", nil
	case reflect.Bool:
		if rv.Bool() {
			return "1", nil
		}
		return "0", nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		switch {
		case math.IsNaN(f):
			return "nan", nil
		case math.IsInf(f, 1):
			return "inf", nil
		case math.IsInf(f, -1):
			return "-inf", nil
		}
		return strconv.FormatFloat(f, 'g', -1, 64), nil
	}
	return "", fmt.Errorf("unsupported type %T", v)
}
