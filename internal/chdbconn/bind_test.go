package chdbconn

import (
	"database/sql"
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

func TestBind(t *testing.T) {
	t.Parallel()
	type day string
	at := time.Date(2025, 3, 10, 10, 0, 0, 999, time.FixedZone("UTC+2", 2*60*60))
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"no placeholders", "SELECT 1", nil, "SELECT 1"},
		{"numbers", "? ? ? ? ?", []any{int64(-7), uint16(65535), uint64(math.MaxUint64), 1.5, true},
			"-7 65535 18446744073709551615 1.5 1"},
		{"special floats", "? ? ?", []any{math.NaN(), math.Inf(1), math.Inf(-1)}, "nan inf -inf"},
		{"strings are quoted and escaped", "toDate(?) = ?", []any{"2025-03-10", `it's a \ path`},
			`toDate('2025-03-10') = 'it\'s a \\ path'`},
		{"named string types", "?", []any{day("2025-03-10")}, "'2025-03-10'"},
		{"times are whole seconds in UTC", "?", []any{at}, "toDateTime(1741593600, 'UTC')"},
		{"placeholders in quotes stay", "SELECT '?', `a?`, \"b?\", 'it''s?', 'x\\'?' , ?", []any{1},
			"SELECT '?', `a?`, \"b?\", 'it''s?', 'x\\'?' , 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := bind(tt.query, tt.args...)
			if err != nil || got != tt.want {
				t.Errorf("bind(%q, %v) = %q, %v; want %q", tt.query, tt.args, got, err, tt.want)
			}
		})
	}
}

func TestBindRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		query string
		args  []any
	}{
		{"too few arguments", "? ?", []any{1}},
		{"too many arguments", "?", []any{1, 2}},
		{"unterminated string", "SELECT 'x ?", []any{1}},
		{"unsupported type", "?", []any{[]string{"a"}}},
		{"nil", "?", []any{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, err := bind(tt.query, tt.args...); err == nil {
				t.Errorf("bind(%q, %v) = %q, want an error", tt.query, tt.args, got)
			}
		})
	}
}

func TestParseRows(t *testing.T) {
	t.Parallel()
	out := "k\torders\tunits\tshare\nString\tUInt64\tInt64\tFloat64\n" +
		"BOOK-1\t2\t-3\t0.5\n" +
		`tab\there\, new\nline \\ 'q' \'q\'` + "\t18446744073709551615\t9223372036854775807\tnan\n"
	r, err := parseRows(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"k", "orders", "units", "share"}; !slices.Equal(r.Columns(), want) {
		t.Errorf("Columns() = %q, want %q", r.Columns(), want)
	}
	type row struct {
		key    string
		orders uint64
		units  int64
		share  float64
	}
	var got []row
	for r.Next() {
		var x row
		if err := r.Scan(&x.key, &x.orders, &x.units, &x.share); err != nil {
			t.Fatal(err)
		}
		got = append(got, x)
	}
	want := []row{
		{"BOOK-1", 2, -3, 0.5},
		{"tab\there\\, new\nline \\ 'q' 'q'", math.MaxUint64, math.MaxInt64, math.NaN()},
	}
	if len(got) != 2 || got[0] != want[0] || got[1].key != want[1].key || got[1].orders != want[1].orders ||
		got[1].units != want[1].units || !math.IsNaN(got[1].share) {
		t.Errorf("rows = %+v, want %+v", got, want)
	}
}

func TestParseRowsOfAStatement(t *testing.T) {
	t.Parallel()
	r, err := parseRows("")
	if err != nil {
		t.Fatal(err)
	}
	if r.Next() || len(r.Columns()) != 0 {
		t.Errorf("a statement's result has rows or columns: %+v", r)
	}
}

func TestScanErrors(t *testing.T) {
	t.Parallel()
	r, err := parseRows("n\ts\nUInt8\tString\n300\tx\n")
	if err != nil {
		t.Fatal(err)
	}
	var small uint8
	var s string
	if err := r.Scan(&small, &s); err == nil {
		t.Error("Scan before Next: no error")
	}
	r.Next()
	for name, dest := range map[string][]any{
		"out of range":        {&small, &s},
		"too few":             {&s},
		"not a pointer":       {small, &s},
		"unsupported pointer": {&[]byte{}, &s},
	} {
		if err := r.Scan(dest...); err == nil {
			t.Errorf("Scan %s: no error", name)
		}
	}
	if _, err := parseRows("n\nUInt8\n1\t2\n"); err == nil {
		t.Error("parseRows of a row wider than its header: no error")
	}
	if _, err := parseRows("n\n"); err == nil {
		t.Error("parseRows without types: no error")
	}
}

func TestQueryRowOfNoRows(t *testing.T) {
	t.Parallel()
	r, err := parseRows("n\nUInt8\n")
	if err != nil {
		t.Fatal(err)
	}
	var n uint8
	if err := (&row{rows: r}).Scan(&n); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("Scan of an empty result = %v, want sql.ErrNoRows", err)
	}
}
