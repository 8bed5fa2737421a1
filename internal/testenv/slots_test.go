package testenv

import "testing"

// TestSlotLockIsTakenOncePerTest: once a test holds the slot lock, it and
// its subtests do not ask again (a second request could queue behind a
// waiting exclusive one that waits for the first), and the record goes with
// the test.
func TestSlotLockIsTakenOncePerTest(t *testing.T) {
	t.Run("holder", func(t *testing.T) {
		if holdsSlotLock(t) {
			t.Fatal("holds the slot lock before asking")
		}
		RequireLogicalWAL(t)
		if !holdsSlotLock(t) {
			t.Fatal("RequireLogicalWAL did not record the hold")
		}
		RequireLogicalWAL(t) // returns at once
		t.Run("sub", func(t *testing.T) {
			if !holdsSlotLock(t) {
				t.Fatal("a subtest does not see its parent's hold")
			}
			RequireLogicalWAL(t)
		})
	})
	t.Run("after", func(t *testing.T) {
		if _, ok := holders.Load(t.Name()[:len(t.Name())-len("after")] + "holder"); ok {
			t.Fatal("the hold outlived its test")
		}
	})
}
