package readnode

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// TestFileRecordComparesAndSetsAndSurvivesReopen: Put is a compare-and-set
// on the revision, Watch gives the current states, Ready, then later Puts,
// and a reopened file holds what was recorded.
func TestFileRecordComparesAndSetsAndSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "record.db")
	r, err := OpenFileRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	st, rev, err := r.Get(ctx, "catalog")
	if err != nil || rev != 0 || st.Live != 1 {
		t.Fatalf("unrecorded model: %+v rev %d err %v, want generation 1 live at revision 0", st, rev, err)
	}
	next, _, err := st.Acquire("me", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rev1, err := r.Put(ctx, "catalog", next, 0)
	if err != nil || rev1 != 1 {
		t.Fatalf("first put: revision %d err %v", rev1, err)
	}
	if _, err := r.Put(ctx, "catalog", next, 0); !errors.Is(err, lifecycle.ErrChanged) {
		t.Fatalf("put at a stale revision: %v, want ErrChanged", err)
	}
	if _, err := OpenFileRecord(path); err == nil {
		t.Fatal("a second open of the same record succeeded: two nodes could share a directory")
	}

	changes := make(chan lifecycle.Change, 8)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Watch(wctx, func(c lifecycle.Change) { changes <- c }) }()
	if c := <-changes; c.Model != "catalog" || c.State.Phase != lifecycle.PhasePreparing {
		t.Fatalf("watch: first change %+v, want the current state of catalog", c)
	}
	if c := <-changes; !c.Ready {
		t.Fatalf("watch: %+v, want Ready", c)
	}
	ready, err := next.Ready("me")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "catalog", ready, rev1); err != nil {
		t.Fatal(err)
	}
	if c := <-changes; c.Model != "catalog" || c.State.Phase != lifecycle.PhaseBuilding {
		t.Fatalf("watch: %+v, want the building state", c)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r, err = OpenFileRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, rev, err = r.Get(ctx, "catalog")
	if err != nil || rev != 2 || st.Phase != lifecycle.PhaseBuilding || st.Rebuild != 2 {
		t.Fatalf("reopened: %+v rev %d err %v, want building generation 2 at revision 2", st, rev, err)
	}
}
