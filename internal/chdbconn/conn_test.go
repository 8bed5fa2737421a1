//go:build chdb

package chdbconn

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

var session *Conn

func TestMain(m *testing.M) {
	conn, err := Open(":memory:")
	if err != nil {
		fmt.Fprintf(os.Stderr, "chDB: %v\nInstall libchdb.so with: sudo bash scripts/services.sh tests\n", err)
		os.Exit(1)
	}
	session = conn
	code := m.Run()
	_ = conn.Close()
	os.Exit(code)
}

// TestBatchRoundTrip inserts values of every kind a store appends and reads
// them back as they went in.
func TestBatchRoundTrip(t *testing.T) {
	ctx := t.Context()
	if err := session.Exec(ctx, "CREATE TABLE batch_round_trip (s String, n Int64, u UInt16, d Date, at DateTime, f UInt8) ENGINE = MergeTree ORDER BY n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := session.Exec(context.Background(), "DROP TABLE batch_round_trip"); err != nil {
			t.Error(err)
		}
	})
	at := time.Date(2025, 3, 10, 23, 59, 59, 999_999_000, time.UTC)
	b, err := session.PrepareBatch(ctx, "INSERT INTO `batch_round_trip` (s, n, u, d, at, f)")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range [][]any{
		{"tab\there, new\nline \\ 'quoted' ?", int64(-1), uint16(65535), time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), at, true},
		{"", int64(2), uint16(0), time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC), time.Unix(0, 0), false},
	} {
		if err := b.Append(row...); err != nil {
			t.Fatal(err)
		}
	}
	if b.Rows() != 2 {
		t.Errorf("Rows() = %d, want 2", b.Rows())
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if err := b.Append("x", 1, 1, at, at, false); err == nil {
		t.Error("Append after Send: no error")
	}

	rows, err := session.Query(ctx, "SELECT s, n, u, toString(d), toUnixTimestamp(at), f FROM batch_round_trip WHERE n >= ? ORDER BY n", -5)
	if err != nil {
		t.Fatal(err)
	}
	type line struct {
		s    string
		n    int64
		u    uint16
		d    string
		unix int64
		f    bool
	}
	var got []line
	for rows.Next() {
		var l line
		if err := rows.Scan(&l.s, &l.n, &l.u, &l.d, &l.unix, &l.f); err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
	}
	want := []line{
		{"tab\there, new\nline \\ 'quoted' ?", -1, 65535, "2025-03-10", at.Unix(), true},
		{"", 2, 0, "1970-01-02", 0, false},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("rows =\n %+v\nwant\n %+v", got, want)
	}
}

func TestQueryRowAndErrors(t *testing.T) {
	ctx := t.Context()
	var v string
	if err := session.QueryRow(ctx, "SELECT concat(?, version())", "v").Scan(&v); err != nil || len(v) < 2 || v[0] != 'v' {
		t.Errorf("QueryRow = %q, %v", v, err)
	}
	if err := session.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := session.Exec(ctx, "SELECT no_such_column FROM system.one"); err == nil {
		t.Error("Exec of a bad query: no error")
	}
	if err := session.QueryRow(ctx, "SELECT no_such_column FROM system.one").Scan(&v); err == nil {
		t.Error("QueryRow of a bad query: no error")
	}
	for _, q := range []string{"SELECT 1", "INSERT INTO t VALUES (1)", "INSERT INTO t FORMAT JSONEachRow"} {
		if _, err := session.PrepareBatch(ctx, q); err == nil {
			t.Errorf("PrepareBatch(%q): no error", q)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := session.Exec(canceled, "SELECT 1"); err == nil {
		t.Error("Exec with a canceled context: no error")
	}
}
