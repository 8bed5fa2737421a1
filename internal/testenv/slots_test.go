package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestSlotLockIsTakenOncePerTest asks for the slot lock again, in the test
// and in a subtest, while an exclusive request waits for the test's shared
// hold: the repeated requests must not queue behind it (they would wait for
// themselves), and the exclusive one is granted once the test ends.
func TestSlotLockIsTakenOncePerTest(t *testing.T) {
	granted := make(chan error, 1)
	ctx := context.Background()
	// The exclusive request's session outlives the holder subtest.
	conn, err := pgx.Connect(ctx, envOr("TEST_DATABASE_URL", defaultPostgresURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	t.Run("holder", func(t *testing.T) {
		RequireLogicalWAL(t)
		var pid int32
		if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1), pg_advisory_unlock($1)`, slotLockKey)
			granted <- err
		}()
		probe := connectPostgres(ctx, t, envOr("TEST_DATABASE_URL", defaultPostgresURL))
		t.Cleanup(func() { probe.Close(context.Background()) })
		deadline := time.Now().Add(10 * time.Second)
		for {
			var waiting bool
			if err := probe.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)`,
				pid).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			if waiting {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the exclusive request never queued")
			}
			time.Sleep(20 * time.Millisecond)
		}

		done := make(chan struct{})
		go func() {
			defer close(done)
			RequireLogicalWAL(t)
			t.Run("sub", func(t *testing.T) { RequireLogicalWAL(t) })
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a repeated RequireLogicalWAL queued behind the exclusive request")
		}
	})
	select {
	case err := <-granted:
		if err != nil {
			t.Fatalf("exclusive request: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the exclusive request was not granted after the test released the lock")
	}
}
