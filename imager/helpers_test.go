package imager

import (
	"testing"
	"time"
)

// testingConfig returns a Config for tests: loopback only, fast progress.
// The caller sets Image, Parts and Mode.
func testingConfig(t testing.TB) Config {
	t.Helper()
	return Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
}
