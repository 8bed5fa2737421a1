// Package testenv gives integration tests their own isolated, self-cleaning
// space on the real services jetcqrs runs on: a PostgreSQL database, a Redis
// key prefix and a ClickHouse database.
//
// A service that does not answer fails the test with a message naming the
// service, its address and the command that starts it; nothing is skipped.
// The defaults are the loopback services scripts/services.sh prepares; the
// environment variables TEST_DATABASE_URL, TEST_REDIS_URL and
// TEST_CLICKHOUSE_ADDR point the tests elsewhere.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

const (
	defaultPostgresURL    = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	defaultRedisURL       = "redis://127.0.0.1:6379/0"
	defaultClickHouseAddr = "127.0.0.1:9000"

	startServices = "run `make test` or `bash scripts/services.sh` (as root: it installs and starts what is missing)"

	// opTimeout bounds each setup and cleanup step, so a wedged service fails
	// the test instead of hanging it until the go test timeout.
	opTimeout = 30 * time.Second
)

// PostgresURL creates an empty database, named jetcqrs_t_<random hex>, on the
// PostgreSQL server of TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) and returns the
// URL of that database: the same URL with its path replaced. Nothing is
// migrated into it.
//
// When the test ends, the database is dropped with everything attached to it:
// replication slots on it are dropped first (their walsenders terminated), then
// its remaining connections, then the database itself (WITH (FORCE)). A failed
// cleanup is reported with t.Errorf.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return postgresURL(t, envOr("TEST_DATABASE_URL", defaultPostgresURL))
}

func postgresURL(t testing.TB, serverURL string) string {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("testenv: TEST_DATABASE_URL must be a postgres:// URL, got %q", serverURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn := connectPostgres(ctx, t, serverURL)
	defer conn.Close(ctx)

	name := "jetcqrs_t_" + randomHex()
	create := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	for attempt := 1; ; attempt++ {
		_, err := conn.Exec(ctx, create)
		if err == nil {
			break
		}
		// CREATE DATABASE copies template1 and fails while anyone else is
		// connected to it; such sessions are short.
		var pgErr *pgconn.PgError
		if attempt == 20 || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			t.Fatalf("testenv: PostgreSQL at %s: create database %s: %v", u.Redacted(), name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() {
		if err := dropPostgresDatabase(serverURL, name); err != nil {
			t.Errorf("testenv: PostgreSQL at %s: %v", u.Redacted(), err)
		}
	})

	dbURL := *u
	dbURL.Path = "/" + name
	dbURL.RawPath = ""
	return dbURL.String()
}

// dropPostgresDatabase drops the replication slots on database name, ends its
// connections and drops it. DROP DATABASE refuses while a logical slot on the
// database is in use, so slots go first.
func dropPostgresDatabase(serverURL, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("drop database %s: connect: %w", name, err)
	}
	defer conn.Close(ctx)

	if err := dropReplicationSlots(ctx, conn, name); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
		name); err != nil {
		return fmt.Errorf("drop database %s: terminate connections: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// dropReplicationSlots drops every replication slot on database db. An active
// slot's walsender is terminated first; the slot stays in use until that
// process has exited, so dropping is retried for a few seconds.
func dropReplicationSlots(ctx context.Context, conn *pgx.Conn, db string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, err := conn.Query(ctx, `SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1`, db)
		if err != nil {
			return fmt.Errorf("list replication slots: %w", err)
		}
		type slot struct {
			name      string
			activePID *int32
		}
		slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (slot, error) {
			var s slot
			return s, row.Scan(&s.name, &s.activePID)
		})
		if err != nil {
			return fmt.Errorf("list replication slots: %w", err)
		}
		if len(slots) == 0 {
			return nil
		}

		var lastErr error
		for _, s := range slots {
			if s.activePID != nil {
				if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *s.activePID); err != nil {
					return fmt.Errorf("terminate walsender %d of slot %s: %w", *s.activePID, s.name, err)
				}
			}
			_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, s.name)
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
			case errors.As(err, &pgErr) && pgErr.Code == "42704": // dropped meanwhile
			case errors.As(err, &pgErr) && pgErr.Code == "55006": // still in use
				lastErr = fmt.Errorf("drop replication slot %s: %w", s.name, err)
			default:
				return fmt.Errorf("drop replication slot %s: %w", s.name, err)
			}
		}
		if lastErr == nil {
			continue
		}
		if time.Now().After(deadline) {
			return lastErr
		}
		select {
		case <-ctx.Done():
			return lastErr
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RequireLogicalWAL fails the test unless the PostgreSQL server of
// TEST_DATABASE_URL runs with wal_level=logical, which logical replication
// slots (the CDC relay) need. The failure message gives the exact fix. It
// then holds the slot lock shared until t ends (see ExclusiveSlots), so call
// it in every test that uses a replication slot.
func RequireLogicalWAL(t testing.TB) {
	t.Helper()
	requireLogicalWAL(t, envOr("TEST_DATABASE_URL", defaultPostgresURL))
	holdSlotLockShared(t)
}

func requireLogicalWAL(t testing.TB, serverURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn := connectPostgres(ctx, t, serverURL)
	defer conn.Close(ctx)

	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		t.Fatalf("testenv: PostgreSQL at %s: SHOW wal_level: %v", redact(serverURL), err)
	}
	if level != "logical" {
		t.Fatalf("testenv: PostgreSQL at %s has wal_level=%s; logical replication slots need wal_level=logical.\n"+
			"Fix: `bash scripts/services.sh` (as root), or as a superuser `ALTER SYSTEM SET wal_level = logical;` "+
			"and restart PostgreSQL (on Debian: `pg_ctlcluster --skip-systemctl-redirect 15 main restart`).",
			redact(serverURL), level)
	}
}

func connectPostgres(ctx context.Context, t testing.TB, serverURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL is not reachable at %s (TEST_DATABASE_URL): %v\n"+
			"Start it: %s; PostgreSQL alone on Debian: `pg_ctlcluster --skip-systemctl-redirect 15 main start`.",
			redact(serverURL), err, startServices)
	}
	return conn
}

// RedisURL checks that Redis at TEST_REDIS_URL (default
// redis://127.0.0.1:6379/0) answers PING and returns that URL with a key
// prefix unique to the test, such as "t1f0c3a9b5e7d2468:". The test must keep
// every key it writes under the prefix: when the test ends, all keys with the
// prefix are deleted (SCAN and UNLINK), and nothing else is. A failed cleanup
// is reported with t.Errorf.
func RedisURL(t testing.TB) (redisURL, prefix string) {
	t.Helper()
	return redisURLWithPrefix(t, envOr("TEST_REDIS_URL", defaultRedisURL))
}

func redisURLWithPrefix(t testing.TB, rawURL string) (string, string) {
	t.Helper()
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("testenv: TEST_REDIS_URL %q: %v", redact(rawURL), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	client := redis.NewClient(opts)
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis is not reachable at %s (TEST_REDIS_URL): %v\n"+
			"Start it: %s; Redis alone: `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" "+
			"--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log`.",
			opts.Addr, err, startServices)
	}

	// The prefix is hex and ':', so it holds no SCAN glob metacharacters.
	prefix := "t" + randomHex() + ":"
	t.Cleanup(func() {
		if err := deleteRedisPrefix(opts, prefix); err != nil {
			t.Errorf("testenv: Redis at %s: delete keys %s*: %v", opts.Addr, prefix, err)
		}
	})
	return rawURL, prefix
}

func deleteRedisPrefix(opts *redis.Options, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	client := redis.NewClient(opts)
	defer client.Close()

	const batchSize = 500
	batch := make([]string, 0, batchSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := client.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	iter := client.Scan(ctx, 0, prefix+"*", batchSize).Iterator()
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}

// ClickHouseAddr checks that ClickHouse answers the native protocol at
// TEST_CLICKHOUSE_ADDR (default 127.0.0.1:9000, user default, no password),
// creates an empty database named jetcqrs_t_<random hex> on it and returns the
// address and the database. When the test ends, the database is dropped with
// its tables. A failed cleanup is reported with t.Errorf.
//
// Debian's ClickHouse (18.16, native protocol revision 54412) answers DDL and
// SELECT from clickhouse-go v2, and INSERT … SELECT with bound arguments
// ("INSERT INTO t SELECT ?, ? UNION ALL SELECT ?, ?"); INSERT … VALUES
// through Exec hangs, and PrepareBatch yields a batch whose Append fails.
func ClickHouseAddr(t testing.TB) (addr, database string) {
	t.Helper()
	return clickHouseAddr(t, envOr("TEST_CLICKHOUSE_ADDR", defaultClickHouseAddr))
}

func clickHouseAddr(t testing.TB, addr string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := openClickHouse(addr)
	if err == nil {
		defer conn.Close()
		err = conn.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("testenv: ClickHouse is not reachable at %s (TEST_CLICKHOUSE_ADDR, native protocol): %v\n"+
			"Start it: %s.", addr, err, startServices)
	}

	name := "jetcqrs_t_" + randomHex()
	if err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: ClickHouse at %s: create database %s: %v", addr, name, err)
	}
	t.Cleanup(func() {
		if err := dropClickHouseDatabase(addr, name); err != nil {
			t.Errorf("testenv: ClickHouse at %s: drop database %s: %v", addr, name, err)
		}
	})
	return addr, name
}

func dropClickHouseDatabase(addr, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := openClickHouse(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
}

func openClickHouse(addr string) (clickhouse.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		DialTimeout: 5 * time.Second,
	})
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// randomHex returns 16 hex digits: names that do not collide across the test
// processes go test runs in parallel.
func randomHex() string {
	return fmt.Sprintf("%016x", rand.Uint64())
}

// redact hides the password of a URL for messages.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
