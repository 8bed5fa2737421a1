package testenv

import (
	"context"
	"strings"
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

// holders records, by test name, the tests holding the lock (shared or
// exclusively). A test, or a subtest of one, that holds it does not ask
// again: a second request would queue behind a waiting exclusive one, which
// waits for the first, and the test would hang.
var holders sync.Map

// ExclusiveSlots waits until no other test uses a replication slot and holds
// them off until t ends. Call it before RequireLogicalWAL, in a test that
// changes a server-wide setting slots depend on; restore the setting in a
// t.Cleanup registered after this call (cleanups run last in, first out).
func ExclusiveSlots(t testing.TB) {
	t.Helper()
	holdSlotLock(t, `SELECT pg_advisory_lock($1)`)
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
	holders.Store(t.Name(), true)
	t.Cleanup(func() {
		holders.Delete(t.Name())
		conn.Close(context.Background())
	})
}

// holdsSlotLock reports whether t or a test it is a subtest of holds the
// lock.
func holdsSlotLock(t testing.TB) bool {
	name := t.Name()
	for {
		if _, ok := holders.Load(name); ok {
			return true
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			return false
		}
		name = name[:i]
	}
}

// holdSlotLockShared is RequireLogicalWAL's part: a slot test runs while no
// test changes slot settings.
func holdSlotLockShared(t testing.TB) {
	t.Helper()
	if holdsSlotLock(t) {
		return
	}
	holdSlotLock(t, `SELECT pg_advisory_lock_shared($1)`)
}
