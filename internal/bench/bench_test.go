package bench

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
)

// TestBenchmarksWriteTables runs every benchmark for a moment against the
// real services and checks that it produces its markdown section with a
// table. It measures nothing and asserts nothing about speed. The
// benchmarks share fixed scratch names, so they run one after the other.
func TestBenchmarksWriteTables(t *testing.T) {
	testenv.RequireLogicalWAL(t)
	server := envOr("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	redisURL, _ := testenv.RedisURL(t)
	chAddr, chDB := testenv.ClickHouseAddr(t)
	chURL := "clickhouse://" + chAddr + "/" + chDB
	ctx := t.Context()

	for _, tc := range []struct {
		name string
		run  func(log io.Writer) (string, error)
	}{
		{"place-order", func(log io.Writer) (string, error) {
			return PlaceOrder(ctx, PlaceOrderConfig{ServerURL: server, Duration: 200 * time.Millisecond,
				Concurrency: []int{2}, SKUs: 50, MaxConns: 4, Log: log})
		}},
		{"relay-drain", func(log io.Writer) (string, error) {
			return RelayDrain(ctx, RelayDrainConfig{ServerURL: server, Events: 1000, Log: log})
		}},
		{"relay-latency", func(log io.Writer) (string, error) {
			return RelayLatency(ctx, RelayLatencyConfig{ServerURL: server, Rates: []int{200}, Duration: 500 * time.Millisecond,
				Writers: 4, Log: log})
		}},
		{"projection-apply", func(log io.Writer) (string, error) {
			return ProjectionApply(ctx, ProjectionApplyConfig{RedisURL: redisURL, ClickHouseURL: chURL,
				Duration: 50 * time.Millisecond, Log: log})
		}},
		{"embedded-apply", func(log io.Writer) (string, error) {
			return EmbeddedApply(ctx, EmbeddedApplyConfig{Dir: t.TempDir(), Duration: 50 * time.Millisecond, Log: log})
		}},
		{"query-get-order", func(log io.Writer) (string, error) {
			return QueryGetOrder(ctx, QueryGetOrderConfig{RedisURL: redisURL, Duration: 200 * time.Millisecond,
				Concurrency: []int{1, 4}, Log: log})
		}},
		{"rebuild", func(log io.Writer) (string, error) {
			return Rebuild(ctx, RebuildConfig{RedisURL: redisURL, ClickHouseURL: chURL, Events: 6000, Log: log})
		}},
		{"edge-catch-up", func(log io.Writer) (string, error) {
			return EdgeCatchUp(ctx, EdgeCatchUpConfig{Events: 2000, Log: log})
		}},
		{"end-to-end", func(log io.Writer) (string, error) {
			return EndToEnd(ctx, EndToEndConfig{ServerURL: server, RedisURL: redisURL, ClickHouseURL: chURL,
				Rates: []int{50}, Duration: time.Second, Workers: 8, MaxConns: 4, Log: log})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			section, err := tc.run(testLog{t})
			if err != nil {
				t.Fatal(err)
			}
			checkSection(t, section)
			path := t.TempDir() + "/benchmarks.md"
			if err := WriteSection(path, tc.name, section); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(path); err != nil || !strings.Contains(string(b), "<!-- bench:"+tc.name+":end -->") {
				t.Fatalf("WriteSection wrote %q, %v", b, err)
			}
		})
	}
}

// checkSection wants a "## " title and a table: a header, its separator and
// at least one row with as many cells.
func checkSection(t *testing.T, section string) {
	t.Helper()
	if !strings.HasPrefix(section, "## ") {
		t.Errorf("section does not start with a ## title:\n%s", section)
	}
	lines := strings.Split(section, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "| ") || i+2 >= len(lines) || !strings.HasPrefix(lines[i+1], "|--") {
			continue
		}
		cells := strings.Count(l, "|")
		rows := 0
		for _, r := range lines[i+2:] {
			if !strings.HasPrefix(r, "|") {
				break
			}
			if strings.Count(r, "|") != cells {
				t.Errorf("row %q has %d cells, header %d", r, strings.Count(r, "|")-1, cells-1)
			}
			rows++
		}
		if rows == 0 {
			t.Errorf("table without rows:\n%s", section)
		}
		return
	}
	t.Errorf("no markdown table in:\n%s", section)
}

// testLog sends a benchmark's progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
