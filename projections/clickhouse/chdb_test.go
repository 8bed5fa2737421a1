//go:build chdb

package chstore_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jetcqrs/jetcqrs/internal/chdbconn"
	"github.com/jetcqrs/jetcqrs/projections/contract"
)

// The tests of this file run the sales store's DDL and SQL on a current
// ClickHouse engine in-process (chDB's libchdb.so, which
// `bash scripts/services.sh tests` installs) beside the ClickHouse 18.16
// server the other tests use. Without the library the test binary panics at
// start, in chdb-go's loader, before any test runs.

// chdbSession is the process's one chDB session, shared by every test;
// each store has a table of its own in it.
var chdbSession *chdbconn.Conn

func TestMain(m *testing.M) {
	conn, err := chdbconn.Open(":memory:")
	if err != nil {
		fmt.Fprintf(os.Stderr, "chDB: %v\nInstall libchdb.so with: sudo bash scripts/services.sh tests\n", err)
		os.Exit(1)
	}
	chdbSession = conn
	code := m.Run()
	_ = conn.Close()
	os.Exit(code)
}

var chdbGenerations atomic.Int64

// newChDBStore returns an empty sales store on chDB, with a generation (so a
// table) of its own.
func newChDBStore(t *testing.T) contract.SalesUnderTest {
	t.Helper()
	s := newStore(t, chdbSession, "chdb"+strconv.FormatInt(chdbGenerations.Add(1), 10))
	t.Cleanup(func() {
		if err := s.Drop(context.Background()); err != nil {
			t.Errorf("drop %s: %v", s.Table(), err)
		}
	})
	return s
}

func TestSalesStoreContractOnChDB(t *testing.T) {
	contract.Sales(t, newChDBStore)
}

// TestSalesEnginesAgree runs the same store code on ClickHouse 18.16 and on
// chDB's current engine and compares every report row by row.
func TestSalesEnginesAgree(t *testing.T) {
	server := connect(t)
	serverVersion, currentVersion := engineVersion(t, server), engineVersion(t, chdbSession)
	if major(t, currentVersion) <= major(t, serverVersion) {
		t.Fatalf("chDB runs ClickHouse %s, the server %s: want chDB's engine to be the newer", currentVersion, serverVersion)
	}
	contract.SalesEnginesAgree(t,
		contract.Engine{Name: "ClickHouse " + serverVersion, Store: newStore(t, server, "g1")},
		contract.Engine{Name: "chDB ClickHouse " + currentVersion, Store: newChDBStore(t)},
	)
}

func engineVersion(t *testing.T, conn driver.Conn) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(t.Context(), "SELECT version()").Scan(&v); err != nil {
		t.Fatalf("SELECT version(): %v", err)
	}
	return v
}

func major(t *testing.T, version string) int {
	t.Helper()
	head, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(head)
	if err != nil {
		t.Fatalf("version %q: %v", version, err)
	}
	return n
}
