package chdbconn

import (
	"database/sql"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// resultFormat is the output format of every query: text rows after a line
// of column names and a line of their types.
const resultFormat = "TabSeparatedWithNamesAndTypes"

// rows is a query's whole result, read from resultFormat. It serves the
// driver.Rows methods a store uses to read a report: Next, Scan, Columns,
// Err and Close; the embedded nil driver.Rows panics on the others.
type rows struct {
	driver.Rows
	columns []string
	types   []string
	data    [][]string
	next    int // index of the row Next moves to
}

var _ driver.Rows = (*rows)(nil)

// parseRows reads out, the resultFormat output of a query; an empty output
// (a statement that returns nothing) has no columns.
func parseRows(out string) (*rows, error) {
	if out == "" {
		return &rows{}, nil
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("chdbconn: result of %d lines has no names and types", len(lines))
	}
	r := &rows{columns: unescapeFields(lines[0]), types: unescapeFields(lines[1])}
	for i, line := range lines[2:] {
		fields := unescapeFields(line)
		if len(fields) != len(r.columns) {
			return nil, fmt.Errorf("chdbconn: result row %d has %d fields for %d columns", i+1, len(fields), len(r.columns))
		}
		r.data = append(r.data, fields)
	}
	return r, nil
}

// unescapeFields splits a TabSeparated line and undoes its escapes.
func unescapeFields(line string) []string {
	fields := strings.Split(line, "\t")
	for i, f := range fields {
		fields[i] = unescapeField(f)
	}
	return fields
}

var tsvEscapes = map[byte]byte{'t': '\t', 'n': '\n', 'r': '\r', '0': 0, 'b': '\b', 'f': '\f', '\\': '\\', '\'': '\''}

func unescapeField(f string) string {
	if !strings.Contains(f, `\`) {
		return f
	}
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] == '\\' && i+1 < len(f) {
			if c, ok := tsvEscapes[f[i+1]]; ok {
				b.WriteByte(c)
				i++
				continue
			}
		}
		b.WriteByte(f[i])
	}
	return b.String()
}

func (r *rows) Next() bool {
	if r.next >= len(r.data) {
		return false
	}
	r.next++
	return true
}

// Scan copies the current row into dest, pointers to strings, booleans or
// numbers of any size, in column order.
func (r *rows) Scan(dest ...any) error {
	if r.next == 0 || r.next > len(r.data) {
		return fmt.Errorf("chdbconn: Scan without a current row")
	}
	row := r.data[r.next-1]
	if len(dest) != len(row) {
		return fmt.Errorf("chdbconn: Scan of %d columns into %d destinations", len(row), len(dest))
	}
	for i, d := range dest {
		if err := scanField(row[i], d); err != nil {
			return fmt.Errorf("chdbconn: column %s (%s): %w", r.columns[i], r.types[i], err)
		}
	}
	return nil
}

func scanField(field string, dest any) error {
	p := reflect.ValueOf(dest)
	if p.Kind() != reflect.Pointer || p.IsNil() {
		return fmt.Errorf("destination %T is not a non-nil pointer", dest)
	}
	v := p.Elem()
	switch v.Kind() {
	case reflect.String:
		v.SetString(field)
		return nil
	case reflect.Bool:
		b, err := strconv.ParseBool(field)
		if err != nil {
			return err
		}
		v.SetBool(b)
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(field, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(field, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetUint(n)
		return nil
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(field, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetFloat(f)
		return nil
	}
	return fmt.Errorf("unsupported destination %T", dest)
}

func (r *rows) Columns() []string { return r.columns }
func (r *rows) Err() error        { return nil }
func (r *rows) Close() error      { return nil }

// row is QueryRow's result: the first row, or sql.ErrNoRows as clickhouse-go
// reports an empty result.
type row struct {
	driver.Row
	rows *rows
	err  error
}

var _ driver.Row = (*row)(nil)

func (r *row) Err() error { return r.err }

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	if !r.rows.Next() {
		return sql.ErrNoRows
	}
	return r.rows.Scan(dest...)
}
