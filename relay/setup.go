package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrWALLevel is matched (errors.Is) by the error CDC mode fails with when
// the server's wal_level is not logical. The error's text carries the fix.
var ErrWALLevel = errors.New("relay: wal_level is not logical")

// Names of what the polling relay installs on outbox_events.
const (
	notifyChannel  = "jetcqrs_outbox"
	notifyFunction = "jetcqrs_outbox_notify"
	notifyTrigger  = "jetcqrs_outbox_notify"
)

// installLockKey serializes Install across processes (a session advisory
// lock, distinct from any leader key derived by Config).
const installLockKey int64 = 0x6a65_7463_7172_7301

// walLevelError is the fail-fast error for a server without logical
// decoding; cluster is PostgreSQL's cluster_name (Debian: "15/main").
func walLevelError(level string, major int, cluster string) error {
	version, name := strconv.Itoa(major), "main"
	if v, n, ok := strings.Cut(cluster, "/"); ok && v != "" && n != "" {
		version, name = v, n
	}
	return fmt.Errorf("%w: PostgreSQL runs with wal_level=%s, and CDC mode reads the outbox through logical decoding, "+
		"which needs wal_level=logical. Fix: as a superuser run `ALTER SYSTEM SET wal_level = logical;` then restart "+
		"PostgreSQL (`pg_ctlcluster --skip-systemctl-redirect %s %s restart`, or `bash scripts/services.sh`), "+
		"or run the relay without logical decoding: --relay-mode=poll",
		ErrWALLevel, level, version, name)
}

// CheckWALLevel returns nil when the server of conn can decode the WAL
// logically, and otherwise an error matching ErrWALLevel that gives the fix.
func CheckWALLevel(ctx context.Context, conn *pgx.Conn) error {
	var level, cluster string
	var versionNum int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('cluster_name'),
		current_setting('server_version_num')::int`).Scan(&level, &cluster, &versionNum)
	if err != nil {
		return fmt.Errorf("relay: check wal_level: %w", err)
	}
	if level != "logical" {
		return walLevelError(level, versionNum/10000, cluster)
	}
	return nil
}

// Install creates what cfg's mode needs, when missing: for CDC the
// publication (outbox_events, inserts only) and the pgoutput slot with its
// exported snapshot, after checking wal_level; for polling the notify
// trigger. The migrations must have run. Run does it too, and backfills the
// events committed before the slot existed, so calling Install first only
// saves that backfill. Idempotent and safe to run concurrently.
func Install(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return install(ctx, cfg.withDefaults())
}

// Install is the package-level Install with the relay's configuration.
func (r *Relay) Install(ctx context.Context) error { return install(ctx, r.cfg) }

func install(ctx context.Context, cfg Config) error {
	conn, err := cfg.connect(ctx, "install")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if cfg.Mode == ModeCDC {
		// Checked before taking any lock: this is the error operators meet
		// first, and it must not wait behind anything.
		if err := CheckWALLevel(ctx, conn); err != nil {
			return err
		}
	}
	// DDL waits at most this long for outbox_events; waiting longer would
	// queue the write store's inserts behind it. Run retries.
	if _, err := conn.Exec(ctx, `SET lock_timeout = '5s'`); err != nil {
		return fmt.Errorf("relay: install: %w", err)
	}
	// Held until the session closes below.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, installLockKey); err != nil {
		return fmt.Errorf("relay: install: lock: %w", err)
	}
	if cfg.Mode == ModePoll {
		return installPoll(ctx, conn)
	}
	if err := ensurePublication(ctx, conn, cfg.PublicationName); err != nil {
		return err
	}
	return ensureSlot(ctx, conn, cfg)
}

func ensurePublication(ctx context.Context, conn *pgx.Conn, name string) error {
	ident := pgx.Identifier{name}.Sanitize()
	var allTables, ins, upd, del, trunc bool
	var tables []string
	err := conn.QueryRow(ctx, `SELECT p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
			coalesce((SELECT array_agg(t.tablename::text) FROM pg_publication_tables t WHERE t.pubname = p.pubname), '{}')
		FROM pg_publication p WHERE p.pubname = $1`, name).Scan(&allTables, &ins, &upd, &del, &trunc, &tables)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		_, err = conn.Exec(ctx, `CREATE PUBLICATION `+ident+` FOR TABLE `+outboxTable+` WITH (publish = 'insert')`)
		if err != nil {
			return fmt.Errorf("relay: create publication %s: %w", name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("relay: look up publication %s: %w", name, err)
	case allTables:
		return permanent(fmt.Errorf("relay: publication %s is FOR ALL TABLES; the relay needs one on %s only. "+
			"Fix: DROP PUBLICATION %s; (the relay re-creates it) or set another publication name", name, outboxTable, ident))
	}
	if !slices.Equal(tables, []string{outboxTable}) {
		if _, err := conn.Exec(ctx, `ALTER PUBLICATION `+ident+` SET TABLE `+outboxTable); err != nil {
			return fmt.Errorf("relay: publication %s: set table %s: %w", name, outboxTable, err)
		}
	}
	if !ins || upd || del || trunc {
		if _, err := conn.Exec(ctx, `ALTER PUBLICATION `+ident+` SET (publish = 'insert')`); err != nil {
			return fmt.Errorf("relay: publication %s: publish inserts only: %w", name, err)
		}
	}
	return nil
}

func ensureSlot(ctx context.Context, conn *pgx.Conn, cfg Config) error {
	slot := cfg.SlotName
	for range 2 {
		var plugin, slotType, database string
		var temporary bool
		err := conn.QueryRow(ctx, `SELECT coalesce(plugin, ''), slot_type, coalesce(database, ''), temporary
			FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &slotType, &database, &temporary)
		if err == nil {
			var current string
			if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&current); err != nil {
				return fmt.Errorf("relay: slot %s: %w", slot, err)
			}
			if slotType != "logical" || plugin != "pgoutput" || database != current || temporary {
				return permanent(fmt.Errorf("relay: replication slot %s exists but is a %s slot of plugin %q on database %q "+
					"(temporary %v); the relay needs a permanent pgoutput slot on %q. Fix: set another slot name, "+
					"or drop it: SELECT pg_drop_replication_slot('%s');",
					slot, slotType, plugin, database, temporary, current, slot))
			}
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("relay: look up slot %s: %w", slot, err)
		}
		_, err = createSlotLocked(ctx, cfg, conn, false)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object: created meanwhile
			continue
		}
		if err != nil {
			return fmt.Errorf("relay: create replication slot %s: %w", slot, err)
		}
		return nil
	}
	return fmt.Errorf("relay: replication slot %s: created and dropped concurrently", slot)
}

// installPoll creates the notify trigger when it is missing (the index of
// unpublished rows comes with the migrations). It checks the catalog first because the DDL locks
// outbox_events: CREATE TRIGGER waits for every open transaction that
// wrote to it, and makes every later writer queue behind it. A restarting
// relay therefore takes no lock at all, and a first install gives up after
// lock_timeout (Run retries) instead of stalling the write store.
func installPoll(ctx context.Context, conn *pgx.Conn) error {
	var haveFunction, haveTrigger bool
	err := conn.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_proc WHERE proname = '`+notifyFunction+`' AND pronamespace = current_schema()::regnamespace),
			EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '`+notifyTrigger+`' AND tgrelid = '`+outboxTable+`'::regclass)`).
		Scan(&haveFunction, &haveTrigger)
	if err != nil {
		return fmt.Errorf("relay: install polling: %w", err)
	}
	var steps []string
	if !haveFunction {
		steps = append(steps, `CREATE OR REPLACE FUNCTION `+notifyFunction+`() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_notify('`+notifyChannel+`', '');
			RETURN NULL;
		END $$`)
	}
	if !haveTrigger {
		steps = append(steps, `CREATE OR REPLACE TRIGGER `+notifyTrigger+` AFTER INSERT ON `+outboxTable+`
			FOR EACH STATEMENT EXECUTE FUNCTION `+notifyFunction+`()`)
	}
	for _, sql := range steps {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("relay: install polling: %w", err)
		}
	}
	return nil
}

// DropSlot drops the replication slot, if it exists. A slot still held by a
// walsender that is going away is waited for up to 10 seconds; a slot in use
// by a running relay is an error (stop the relay first).
func DropSlot(ctx context.Context, databaseURL, slot string) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return fmt.Errorf("relay: drop slot %s: connect: %w", slot, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("relay: drop slot %s: %w", slot, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("relay: drop slot %s: %w", slot, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DropPublication drops the publication, if it exists.
func DropPublication(ctx context.Context, databaseURL, publication string) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return fmt.Errorf("relay: drop publication %s: connect: %w", publication, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{publication}.Sanitize()); err != nil {
		return fmt.Errorf("relay: drop publication %s: %w", publication, err)
	}
	return nil
}

// DropPollTrigger removes what polling mode installs: the notify trigger
// and its function.
func DropPollTrigger(ctx context.Context, databaseURL string) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return fmt.Errorf("relay: drop polling trigger: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, sql := range []string{
		`DROP TRIGGER IF EXISTS ` + notifyTrigger + ` ON ` + outboxTable,
		`DROP FUNCTION IF EXISTS ` + notifyFunction + `()`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("relay: drop polling trigger: %w", err)
		}
	}
	return nil
}
