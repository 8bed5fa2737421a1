package testenv

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

func TestPostgresURL(t *testing.T) {
	t.Parallel()
	RequireLogicalWAL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var dbURL, slot string
	var walsender *pgconn.PgConn
	t.Run("use", func(t *testing.T) {
		dbURL = PostgresURL(t)
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatalf("connect to the new database: %v", err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })

		var tables int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Fatalf("new database has %d tables in public, want 0", tables)
		}

		slot = "testenv_" + randomHex()
		for _, sql := range []string{
			`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)`,
			`INSERT INTO items VALUES (1, 'one'), (2, 'two')`,
			`CREATE PUBLICATION items_pub FOR TABLE items`,
			`SELECT pg_create_logical_replication_slot('` + slot + `', 'pgoutput')`,
		} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		var name string
		if err := conn.QueryRow(ctx, `SELECT name FROM items WHERE id = 2`).Scan(&name); err != nil || name != "two" {
			t.Fatalf("read back: name %q, err %v", name, err)
		}

		// An active walsender left behind, as a relay test that fails halfway
		// would leave it: the cleanup must still drop the slot and the database.
		replURL, err := url.Parse(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		q := replURL.Query()
		q.Set("replication", "database")
		replURL.RawQuery = q.Encode()
		walsender, err = pgconn.Connect(ctx, replURL.String())
		if err != nil {
			t.Fatalf("replication connection: %v", err)
		}
		err = pglogrepl.StartReplication(ctx, walsender, slot, 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names 'items_pub'"},
		})
		if err != nil {
			t.Fatalf("start replication: %v", err)
		}
		var active bool
		if err := conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil || !active {
			t.Fatalf("slot %s active = %v, err %v; want an active slot", slot, active, err)
		}
	})
	if walsender != nil {
		defer walsender.Close(context.Background())
	}
	if dbURL == "" {
		return
	}

	admin, err := pgx.Connect(ctx, envOr("TEST_DATABASE_URL", defaultPostgresURL))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	parsed, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(parsed.Path, "/")
	if !strings.HasPrefix(name, "jetcqrs_t_") {
		t.Errorf("database name %q, want prefix jetcqrs_t_", name)
	}
	var databases, slots int
	err = admin.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $2)`, name, slot).Scan(&databases, &slots)
	if err != nil {
		t.Fatal(err)
	}
	if databases != 0 || slots != 0 {
		t.Errorf("after cleanup: %d databases named %s and %d slots named %s, want none", databases, name, slots, slot)
	}
}

func TestRedisURL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const keys = 1234 // more than one SCAN batch and one UNLINK batch
	var redisURL, prefix string
	t.Run("use", func(t *testing.T) {
		redisURL, prefix = RedisURL(t)
		client := newRedisClient(t, redisURL)
		pipe := client.Pipeline()
		for i := range keys {
			pipe.Set(ctx, fmt.Sprintf("%sorder:%d", prefix, i), i, time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := client.Get(ctx, prefix+"order:42").Int(); err != nil || got != 42 {
			t.Fatalf("read back: %d, %v", got, err)
		}
	})
	if redisURL == "" {
		return
	}

	if !strings.HasPrefix(prefix, "t") || !strings.HasSuffix(prefix, ":") {
		t.Errorf("prefix %q, want t<hex>:", prefix)
	}
	client := newRedisClient(t, redisURL)
	left, _, err := client.Scan(ctx, 0, prefix+"*", 10000).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := client.Exists(ctx, prefix+"order:0", prefix+"order:1233").Result(); len(left) != 0 || n != 0 {
		t.Errorf("after cleanup: %d keys with prefix %s remain", max(len(left), int(n)), prefix)
	}
}

func TestRedisURLCleanupKeepsOtherKeys(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var redisURL, neighbour string
	t.Run("use", func(t *testing.T) {
		var prefix string
		redisURL, prefix = RedisURL(t)
		// Another test's prefix that shares this one's first characters.
		neighbour = prefix[:len(prefix)-1] + "x:kept"
		client := newRedisClient(t, redisURL)
		if err := client.Set(ctx, neighbour, "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.Set(ctx, prefix+"gone", "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	})
	if redisURL == "" {
		return
	}
	client := newRedisClient(t, redisURL)
	defer client.Del(ctx, neighbour)
	if n, err := client.Exists(ctx, neighbour).Result(); err != nil || n != 1 {
		t.Errorf("key %s outside the prefix: exists = %d, err %v; want it kept", neighbour, n, err)
	}
}

func TestClickHouseAddr(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var addr, database string
	t.Run("use", func(t *testing.T) {
		addr, database = ClickHouseAddr(t)
		conn := newClickHouseConn(t, addr)
		for _, sql := range []string{
			"CREATE TABLE " + database + ".sales (seq UInt64, sku String) ENGINE = MergeTree ORDER BY seq",
			"INSERT INTO " + database + ".sales SELECT number, concat('sku-', toString(number)) FROM system.numbers LIMIT 10",
		} {
			if err := conn.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		var rows, seqSum uint64
		if err := conn.QueryRow(ctx, "SELECT count(), sum(seq) FROM "+database+".sales").Scan(&rows, &seqSum); err != nil {
			t.Fatal(err)
		}
		if rows != 10 || seqSum != 45 {
			t.Fatalf("read back count %d sum %d, want 10 and 45", rows, seqSum)
		}
	})
	if database == "" {
		return
	}

	if !strings.HasPrefix(database, "jetcqrs_t_") {
		t.Errorf("database %q, want prefix jetcqrs_t_", database)
	}
	var left uint64
	if err := newClickHouseConn(t, addr).QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", database).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("after cleanup: database %s still exists", database)
	}
}

// TestMissingServiceFails checks that a service that does not answer fails
// the test with its name, its address and the command that starts it.
func TestMissingServiceFails(t *testing.T) {
	t.Parallel()
	const closedPort = "127.0.0.1:1"
	tests := []struct {
		name    string
		helper  func(testing.TB)
		service string
	}{
		{"postgres", func(tb testing.TB) { postgresURL(tb, "postgres://postgres@"+closedPort+"/postgres?sslmode=disable") }, "PostgreSQL"},
		{"logical wal", func(tb testing.TB) { requireLogicalWAL(tb, "postgres://postgres:secret@"+closedPort+"/postgres") }, "PostgreSQL"},
		{"redis", func(tb testing.TB) { redisURLWithPrefix(tb, "redis://"+closedPort+"/0") }, "Redis"},
		{"clickhouse", func(tb testing.TB) { clickHouseAddr(tb, closedPort) }, "ClickHouse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := fatalMessage(t, tt.helper)
			t.Logf("failure message:\n%s", msg)
			for _, want := range []string{tt.service, closedPort, "bash scripts/services.sh"} {
				if !strings.Contains(msg, want) {
					t.Errorf("failure message lacks %q:\n%s", want, msg)
				}
			}
			if strings.Contains(msg, "secret") {
				t.Errorf("failure message shows the password:\n%s", msg)
			}
		})
	}
}

// fatalRecorder stands in for a testing.TB whose Fatal stops the helper and
// records the message, so the failure path can be checked without failing.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// fatalMessage runs helper and returns the message it failed with; it fails t
// if the helper returned without failing.
func fatalMessage(t *testing.T, helper func(testing.TB)) string {
	t.Helper()
	r := &fatalRecorder{TB: t}
	failed := true
	done := make(chan struct{})
	go func() {
		defer close(done)
		helper(r)
		failed = false
	}()
	<-done
	if !failed {
		t.Fatal("helper returned without failing the test")
	}
	return r.msg
}

func newRedisClient(t *testing.T, rawURL string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { client.Close() })
	return client
}

func newClickHouseConn(t *testing.T, addr string) clickhouse.Conn {
	t.Helper()
	conn, err := openClickHouse(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
