// Package testlog gives tests a logger that writes to the test's output and
// goes quiet once the test ends: libraries such as nats.go log from their own
// goroutines, possibly after the test returned. Standard library only, so any
// package's in-package tests can use it.
package testlog

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

// New returns a text logger at level that writes to t's output until t ends.
func New(t testing.TB, level slog.Level) *slog.Logger {
	w := &writer{w: t.Output()}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type writer struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *writer) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
