package jetcqrs_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBinariesDoNotLoadChDB keeps chDB to the tests: chdb-go loads
// libchdb.so when a program starts and panics without it, so no command may
// depend on it, even built with the tag that turns the chDB tests on.
func TestBinariesDoNotLoadChDB(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "-tags", "chdb", "./cmd/...").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/...: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/jetcqrs/jetcqrs/cmd/jetcqrs") {
		t.Fatalf("go list -deps ./cmd/... does not list cmd/jetcqrs: %q", deps)
	}
	for _, dep := range deps {
		if strings.HasPrefix(dep, "github.com/chdb-io/") || dep == "github.com/jetcqrs/jetcqrs/internal/chdbconn" {
			t.Errorf("a command depends on %s", dep)
		}
	}
}
