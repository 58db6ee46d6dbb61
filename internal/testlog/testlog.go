// Package testlog routes a test's slog output to t.Log. It owns nothing
// else; it is test plumbing, imported only by _test.go files.
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New routes slog output to t.Log until the test's cleanups are done.
// anacrolix's connection goroutines can log after a Session's Close
// returns, and t.Log after the test has completed panics; those lines are
// dropped instead. Call it before starting what logs to it, so its cleanup
// runs after theirs.
func New(t testing.TB) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *writer) Write(b []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}
