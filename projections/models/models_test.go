package models_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/projections/models"
)

// opener opens models in a test's own Redis key prefix, ClickHouse database
// and data directory; it returns the ClickHouse connection and database and
// the data directory too.
func opener(t *testing.T) (*models.Opener, clickhouse.Conn, string, string) {
	t.Helper()
	rurl, prefix := testenv.RedisURL(t)
	ropts, err := redis.ParseURL(rurl)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(ropts)
	t.Cleanup(func() { _ = rdb.Close() })
	addr, db := testenv.ClickHouseAddr(t)
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Database: db}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	dir := t.TempDir()
	return models.NewOpener(models.Config{Redis: rdb, RedisPrefix: prefix, ClickHouse: ch, DataDir: dir}), ch, db, dir
}

func TestSpecsNameEveryModelOnce(t *testing.T) {
	t.Parallel()
	var names []string
	for _, s := range models.Specs() {
		if len(s.AggregateTypes) == 0 {
			t.Errorf("%s reads no aggregate type", s.Name)
		}
		names = append(names, s.Name)
	}
	slices.Sort(names)
	if want := []string{models.Catalog, models.Inventory, models.Orders, models.Sales}; !slices.Equal(names, want) {
		t.Fatalf("specs name %v, want %v", names, want)
	}
	models.Specs()[0].Name = "changed"
	if models.Specs()[0].Name == "changed" {
		t.Fatal("Specs hands out shared state")
	}
}

// TestOpenRedisModels: a fresh generation is emptied and marked, a reopened
// one keeps its data, generations do not share keys, and Drop removes the
// generation with its marker.
func TestOpenRedisModels(t *testing.T) {
	t.Parallel()
	o, _, _, _ := opener(t)
	ctx := context.Background()
	for _, name := range []string{models.Orders, models.Inventory} {
		t.Run(name, func(t *testing.T) {
			g1, err := o.Open(ctx, name, 1, true)
			if err != nil {
				t.Fatal(err)
			}
			mk, ok := g1.(lifecycle.Marker)
			if !ok {
				t.Fatalf("%s is no Marker", name)
			}
			if marked, err := mk.Marked(ctx); err != nil || !marked {
				t.Fatalf("fresh generation marked = %v, %v", marked, err)
			}
			g2, err := o.Open(ctx, name, 2, false)
			if err != nil {
				t.Fatal(err)
			}
			if marked, _ := g2.(lifecycle.Marker).Marked(ctx); marked {
				t.Fatal("generation 2, never opened fresh, shares generation 1's marker")
			}
			again, err := o.Open(ctx, name, 1, false)
			if err != nil {
				t.Fatal(err)
			}
			if marked, _ := again.(lifecycle.Marker).Marked(ctx); !marked {
				t.Fatal("reopening generation 1 lost its marker")
			}
			if err := again.Drop(ctx); err != nil {
				t.Fatal(err)
			}
			if marked, _ := mk.Marked(ctx); marked {
				t.Fatal("Drop left the marker")
			}
			if _, ok := g1.Store().(projections.VersionReader); !ok {
				t.Fatalf("%s store %T reports no versions", name, g1.Store())
			}
		})
	}
}

// TestOpenSalesCreatesAndDropsItsTable: a sales generation is its own
// ClickHouse table, created on open and gone after Drop.
func TestOpenSalesCreatesAndDropsItsTable(t *testing.T) {
	t.Parallel()
	o, ch, db, _ := opener(t)
	ctx := context.Background()
	tables := func() []string {
		rows, err := ch.Query(ctx, "SELECT name FROM system.tables WHERE database = ?", db)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			out = append(out, n)
		}
		return out
	}
	m, err := o.Open(ctx, models.Sales, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(lifecycle.Marker); ok {
		t.Fatal("sales is a Marker: ClickHouse keeps its data")
	}
	if got := tables(); !slices.Contains(got, "sales_lines_g3") {
		t.Fatalf("tables %v, want sales_lines_g3", got)
	}
	if _, ok := m.Store().(projections.SalesReader); !ok {
		t.Fatalf("sales store %T serves no reports", m.Store())
	}
	if err := m.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := tables(); slices.Contains(got, "sales_lines_g3") {
		t.Fatalf("tables after Drop %v", got)
	}
}

// TestOpenEmbeddedCatalog: the index of generation N is DATA_DIR/catalog/gN;
// fresh starts it empty, Close is idempotent and Drop deletes the directory.
func TestOpenEmbeddedCatalog(t *testing.T) {
	t.Parallel()
	o, _, _, dir := opener(t)
	ctx := context.Background()
	gdir := filepath.Join(dir, "catalog", "g4")
	if err := os.MkdirAll(gdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gdir, "stale"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := o.Open(ctx, models.Catalog, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(gdir, "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a fresh generation kept what was there: %v", err)
	}
	if _, ok := m.(lifecycle.Exposer); ok {
		t.Fatal("the embedded catalog is an Exposer: it has no alias")
	}
	if _, err := m.Store().(projections.CatalogReader).Product(ctx, "P-1"); !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("Product in an empty index: %v, want ErrNotFound", err)
	}
	m.Close()
	m.Close()
	if err := m.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(gdir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Drop left %s: %v", gdir, err)
	}
}

func TestOpenRefusesAnUnknownModel(t *testing.T) {
	t.Parallel()
	o := models.NewOpener(models.Config{})
	if _, err := o.Open(context.Background(), "audit", 1, true); !errors.Is(err, models.ErrNoSuchModel) {
		t.Fatalf("Open(audit) = %v, want ErrNoSuchModel", err)
	}
}
