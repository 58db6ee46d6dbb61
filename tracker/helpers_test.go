package tracker

import (
	"crypto/sha1"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// testingConfig returns a Config for tests: loopback listen on a free
// port, 1s interval, short peer TTL, small caps.
func testingConfig(t testing.TB) Config {
	t.Helper()
	return Config{
		Listen:        "127.0.0.1:0",
		Interval:      time.Second,
		PeerTTL:       3 * time.Second,
		MaxPeers:      50,
		MaxSwarmPeers: 256,
	}
}

// fakeClock is a settable clock for Tracker.now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestTracker returns a tracker on a fake clock.
func newTestTracker(t testing.TB, cfg Config) (*Tracker, *fakeClock) {
	t.Helper()
	tr, err := New(cfg, testlog.New(t))
	if err != nil {
		t.Fatalf("New(%+v) = %v, want nil error", cfg, err)
	}
	clk := &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	tr.now = clk.Now
	return tr, clk
}

func hashOf(s string) [20]byte { return sha1.Sum([]byte(s)) }

func peerID(n int) [20]byte {
	var id [20]byte
	copy(id[:], "-PX0001-")
	copy(id[8:], strconv.Itoa(1000000000+n))
	return id
}

// query builds an announce query; extra pairs override or add keys
// (an empty value deletes the key).
func query(ih, id [20]byte, port int, extra ...string) url.Values {
	q := url.Values{
		"info_hash":  {string(ih[:])},
		"peer_id":    {string(id[:])},
		"port":       {strconv.Itoa(port)},
		"uploaded":   {"0"},
		"downloaded": {"0"},
		"left":       {"100"},
		"compact":    {"1"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			q.Del(extra[i])
		} else {
			q.Set(extra[i], extra[i+1])
		}
	}
	return q
}

// reply is an announce reply as a client decodes it.
type reply struct {
	FailureReason string `bencode:"failure reason"`
	Interval      int    `bencode:"interval"`
	Complete      int    `bencode:"complete"`
	Incomplete    int    `bencode:"incomplete"`
	Peers         string `bencode:"peers"` // compact, BEP 23
}

// compactPeers decodes BEP 23 compact IPv4 peers.
func (r reply) compactPeers(t testing.TB) []string {
	t.Helper()
	if len(r.Peers)%6 != 0 {
		t.Fatalf("compact peers are %d bytes, not a multiple of 6", len(r.Peers))
	}
	var ret []string
	for i := 0; i < len(r.Peers); i += 6 {
		b := r.Peers[i : i+6]
		ret = append(ret, strconv.Itoa(int(b[0]))+"."+strconv.Itoa(int(b[1]))+"."+strconv.Itoa(int(b[2]))+"."+strconv.Itoa(int(b[3]))+":"+strconv.Itoa(int(b[4])<<8|int(b[5])))
	}
	return ret
}

// announceFrom serves one announce query in-process as if from remote
// ("ip:port" of the TCP connection) and decodes the reply.
func announceFrom(t testing.TB, h http.Handler, remote, rawQuery string) reply {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/announce", nil)
	req.URL.RawQuery = rawQuery
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /announce?%s = HTTP %d %q, want 200", rawQuery, rec.Code, rec.Body.Bytes())
	}
	var r reply
	if err := bencode.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("decoding announce reply %q: %v", rec.Body.Bytes(), err)
	}
	return r
}
