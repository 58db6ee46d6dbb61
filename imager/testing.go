package imager

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestingConfig returns a Config for tests: loopback only, fast progress.
// The caller sets Image, Paths and Mode.
func TestingConfig(t testing.TB) Config {
	t.Helper()
	return Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
}

// TestLogger routes slog output to t.Log.
func TestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
