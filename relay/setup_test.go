package relay_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetcqrs/jetcqrs/internal/relaypub"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/relay"
)

func TestCheckWALLevel(t *testing.T) {
	t.Parallel()
	testenv.RequireLogicalWAL(t)
	conn, err := pgx.Connect(t.Context(), testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := relay.CheckWALLevel(t.Context(), conn); err != nil {
		t.Errorf("CheckWALLevel on a wal_level=logical server: %v", err)
	}
}

// publication describes a publication as the catalog has it.
func publication(t *testing.T, pool *pgxpool.Pool, name string) string {
	t.Helper()
	var ins, upd, del, trunc bool
	var tables []string
	err := pool.QueryRow(t.Context(), `SELECT pubinsert, pubupdate, pubdelete, pubtruncate,
			coalesce((SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_publication_tables WHERE pubname = $1), '{}')
		FROM pg_publication WHERE pubname = $1`, name).Scan(&ins, &upd, &del, &trunc, &tables)
	if errors.Is(err, pgx.ErrNoRows) {
		return "none"
	}
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for op, on := range map[string]bool{"insert": ins, "update": upd, "delete": del, "truncate": trunc} {
		if on {
			ops = append(ops, op)
		}
	}
	slices.Sort(ops)
	return strings.Join(ops, ",") + " on " + strings.Join(tables, ",")
}

func TestInstall(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	cfg := e.config()
	e.install(cfg)
	e.install(cfg)
	if got := publication(t, e.pool, e.slot); got != "insert on outbox_events" {
		t.Errorf("publication: %s", got)
	}
	var plugin string
	if err := e.pool.QueryRow(ctx, `SELECT plugin FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&plugin); err != nil || plugin != "pgoutput" {
		t.Errorf("slot plugin %q, %v", plugin, err)
	}

	t.Run("publication drift is repaired", func(t *testing.T) {
		for _, sql := range []string{
			`CREATE TABLE other_table (id int PRIMARY KEY)`,
			`ALTER PUBLICATION ` + e.slot + ` ADD TABLE other_table`,
			`ALTER PUBLICATION ` + e.slot + ` SET (publish = 'insert, update, delete')`,
		} {
			if _, err := e.pool.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		e.install(cfg)
		if got := publication(t, e.pool, e.slot); got != "insert on outbox_events" {
			t.Errorf("publication after Install: %s", got)
		}
	})

	t.Run("a foreign slot is refused", func(t *testing.T) {
		foreign := cfg
		foreign.SlotName = e.slot + "_td"
		foreign.PublicationName = e.slot
		if _, err := e.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, foreign.SlotName); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := relay.DropSlot(context.Background(), e.dbURL, foreign.SlotName); err != nil {
				t.Errorf("drop slot: %v", err)
			}
		})
		err := relay.Install(ctx, foreign)
		if err == nil || !strings.Contains(err.Error(), "pg_drop_replication_slot('"+foreign.SlotName+"')") {
			t.Errorf("Install: %v, want the fix", err)
		}
		r, err := relay.New(foreign, relaypub.Publisher{})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := r.Run(runCtx); err == nil || runCtx.Err() != nil {
			t.Errorf("Run returned %v (context %v), want the slot error at once", err, runCtx.Err())
		}
	})

	t.Run("polling trigger notifies", func(t *testing.T) {
		pollCfg := cfg
		pollCfg.Mode = relay.ModePoll
		e.install(pollCfg)
		e.install(pollCfg)
		// A restarting relay must not queue the write store's inserts
		// behind a lock on outbox_events while a writer is open.
		open, err := e.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = open.Rollback(context.Background()) }() // a no-op once committed
		if _, err := open.Exec(ctx, insertOutbox, "open", 1, 1); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		e.install(pollCfg)
		if _, err := e.pool.Exec(ctx, insertOutbox, "other", 1, 1); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Install and an insert took %s while a writer was open", took)
		}
		if err := open.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var valid bool
		if err := e.pool.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'outbox_events_unpublished'::regclass`).
			Scan(&valid); err != nil || !valid {
			t.Errorf("index of unpublished rows: valid %v, %v", valid, err)
		}
		conn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, `LISTEN jetcqrs_outbox`); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Exec(ctx, insertOutbox, "notify", 1, 3); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := conn.WaitForNotification(wctx); err != nil {
			t.Fatalf("no notification after an insert: %v", err)
		}
	})

	t.Run("teardown", func(t *testing.T) {
		for range 2 { // idempotent
			if err := relay.DropPollTrigger(ctx, e.dbURL); err != nil {
				t.Fatal(err)
			}
			if err := relay.DropPublication(ctx, e.dbURL, e.slot); err != nil {
				t.Fatal(err)
			}
			if err := relay.DropSlot(ctx, e.dbURL, e.slot); err != nil {
				t.Fatal(err)
			}
		}
		var left int
		err := e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1)
			+ (SELECT count(*) FROM pg_publication WHERE pubname = $1)
			+ (SELECT count(*) FROM pg_trigger WHERE tgname = 'jetcqrs_outbox_notify')`, e.slot).Scan(&left)
		if err != nil || left != 0 {
			t.Errorf("%d objects left after teardown (%v)", left, err)
		}
	})
}
