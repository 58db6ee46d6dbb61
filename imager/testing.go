package imager

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestingConfig returns a Config for tests: loopback only, fast progress.
// The caller sets Image, Paths and Mode.
func TestingConfig(t testing.TB) Config {
	t.Helper()
	return Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
}

// TestLogger routes slog output to t.Log until the test's cleanups are
// done. anacrolix's connection goroutines can log after a Session's Close
// returns, and t.Log after the test has completed panics; those lines are
// dropped instead. Call it before starting what logs to it, so its cleanup
// runs after theirs.
func TestLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}
