package tracker

import (
	"testing"
	"time"
)

// TestingConfig returns a Config for tests: loopback listen on a free
// port, 1s interval, short peer TTL, small caps.
func TestingConfig(t testing.TB) Config {
	t.Helper()
	return Config{
		Listen:        "127.0.0.1:0",
		Interval:      time.Second,
		PeerTTL:       3 * time.Second,
		MaxPeers:      50,
		MaxSwarmPeers: 256,
	}
}
