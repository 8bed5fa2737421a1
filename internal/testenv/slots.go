package testenv

import (
	"context"
	"sync"
	"testing"
)

// slotLockKey is the PostgreSQL advisory lock that orders tests touching
// replication slots against the tests that change server-wide slot settings
// (max_slot_wal_keep_size): every slot test holds it shared, from
// RequireLogicalWAL to its end; ExclusiveSlots holds it alone. It is an
// advisory lock rather than a mutex so that test binaries of different
// packages, run at once, respect it too.
const slotLockKey int64 = 0x6a65_7463_7172_7302

// exclusive records the tests holding the lock exclusively, which must not
// also wait for it shared.
var exclusive sync.Map

// ExclusiveSlots waits until no other test uses a replication slot and holds
// them off until t ends. Call it before RequireLogicalWAL, in a test that
// changes a server-wide setting slots depend on; restore the setting in a
// t.Cleanup registered after this call (cleanups run last in, first out).
func ExclusiveSlots(t testing.TB) {
	t.Helper()
	holdSlotLock(t, `SELECT pg_advisory_lock($1)`)
	exclusive.Store(t, true)
	t.Cleanup(func() { exclusive.Delete(t) })
}

func holdSlotLock(t testing.TB, sql string) {
	t.Helper()
	serverURL := envOr("TEST_DATABASE_URL", defaultPostgresURL)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	conn := connectPostgres(ctx, t, serverURL)
	cancel()
	// Other tests may hold the lock for minutes: wait without a deadline.
	if _, err := conn.Exec(context.Background(), sql, slotLockKey); err != nil {
		t.Fatalf("testenv: slot lock: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
}

// holdSlotLockShared is RequireLogicalWAL's part: a slot test runs while no
// test changes slot settings.
func holdSlotLockShared(t testing.TB) {
	t.Helper()
	if _, ok := exclusive.Load(t); ok {
		return
	}
	holdSlotLock(t, `SELECT pg_advisory_lock_shared($1)`)
}
