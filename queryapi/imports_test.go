package queryapi_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestQueryAPINeverReachesTheWriteStore enforces CQRS at the import graph:
// nothing the query API links, directly or transitively, is the write store
// or a PostgreSQL driver.
func TestQueryAPINeverReachesTheWriteStore(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "github.com/jetcqrs/jetcqrs/queryapi").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/jetcqrs/jetcqrs/postgres",
		"github.com/jetcqrs/jetcqrs/commandapi",
		"github.com/jetcqrs/jetcqrs/relay",
		"github.com/jackc/pgx",
		"github.com/jackc/pglogrepl",
		"github.com/lib/pq",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned too few packages to be the real graph: %v", deps)
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("queryapi depends on %s: the read side must never reach the write store", dep)
			}
		}
	}
}
