package readnode

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

const crashChildEnv = "READNODE_CRASH_CHILD" // "<nats url> <dir>"

func TestMain(m *testing.M) {
	if args := os.Getenv(crashChildEnv); args != "" {
		if err := runCrashChild(strings.Fields(args)); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runCrashChild runs a node on dir until it is killed.
func runCrashChild(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want <url> <dir>, got %q", args)
	}
	ctx := context.Background()
	nc, err := jnats.Connect(ctx, args[0], "readnode-crash-child", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	n, err := Open(ctx, Config{Dir: args[1], JS: js, Models: []string{Catalog, Orders, Inventory, Sales}, BatchSize: 16})
	if err != nil {
		return err
	}
	return n.Run(ctx) // until SIGKILL
}

// TestNodeSurvivesSIGKILLAnywhere kills a node process (SIGKILL) at random
// moments while events keep arriving — during open, catch-up, applies and
// idle waits — and restarts it on the same directory, round after round.
// The node that finally runs holds every event once and a checkpoint at the
// stream's end.
func TestNodeSurvivesSIGKILLAnywhere(t *testing.T) {
	js, url := streamAt(t)
	dir := filepath.Join(t.TempDir(), "node")
	var published sync.WaitGroup
	stop := make(chan struct{})
	var count int
	var pubErr error
	published.Go(func() {
		for ; ; count++ {
			select {
			case <-stop:
				return
			default:
			}
			if pubErr = tryPublishProduct(t.Context(), js, fmt.Sprintf("SKU-%05d", count), 1, nil); pubErr != nil {
				return
			}
			if count%20 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	for round := range 10 {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+url+" "+dir)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(600)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if status, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !status.Signaled() {
			t.Fatalf("round %d: the child ended by itself (%v): %s", round, err, out.String())
		}
	}
	close(stop)
	published.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}

	n, err := Open(t.Context(), Config{Dir: dir, JS: js, Models: []string{Catalog, Orders, Inventory, Sales}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for n.Ready(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready a minute after the last kill: %v", n.Ready(t.Context()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range count {
		sku := fmt.Sprintf("SKU-%05d", i)
		if p, err := n.Readers().Catalog.Product(t.Context(), sku); err != nil || p.Version != 1 {
			t.Fatalf("%s of %d: catalog %+v %v", sku, count, p, err)
		}
		if v, err := n.Readers().Inventory.Inventory(t.Context(), sku); err != nil || v.SKU != sku {
			t.Fatalf("%s of %d: stock %+v %v", sku, count, v, err)
		}
	}
	s, err := js.Stream(t.Context(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	last := s.CachedInfo().State.LastSeq
	for _, name := range []string{Catalog, Inventory} {
		if cp, err := n.models[name].live.Load().st.checkpoint(t.Context()); err != nil || cp != last {
			t.Errorf("%s checkpoint %d (%v), stream ends at %d", name, cp, err, last)
		}
	}
	st, _ := n.Status(t.Context())
	t.Logf("%d events through 10 kills; %+v", count, st)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
