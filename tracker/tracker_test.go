package tracker

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	anacrolixTracker "github.com/anacrolix/torrent/tracker"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestRoundTrip announces over loopback with anacrolix's own tracker
// client and checks what a real client sees.
func TestRoundTrip(t *testing.T) {
	tr, err := New(testingConfig(t), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ih := hashOf("win11")
	tr.Publish(ih, "win11")
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()

	announce := func(n int, left int64, ev anacrolixTracker.AnnounceEvent) anacrolixTracker.AnnounceResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := anacrolixTracker.Announce{
			TrackerUrl: srv.URL + "/announce",
			Context:    ctx,
			Request: anacrolixTracker.AnnounceRequest{
				InfoHash: ih, PeerId: peerID(n), Port: uint16(7000 + n),
				Left: left, Uploaded: int64(n), Downloaded: int64(10 * n), Event: ev, NumWant: -1,
			},
		}.Do()
		if err != nil {
			t.Fatalf("announce from peer %d: %v", n, err)
		}
		return res
	}

	// Peer 0 is the seeder; 1..3 are leechers; peer 3 does not know left.
	announce(0, 0, anacrolixTracker.Started)
	announce(1, 1000, anacrolixTracker.Started)
	announce(2, 1000, anacrolixTracker.Started)
	res := announce(3, -1, anacrolixTracker.Started)

	var got []string
	for _, p := range res.Peers {
		got = append(got, fmt.Sprintf("%v:%d", p.IP, p.Port))
	}
	slices.Sort(got)
	want := []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}
	if !slices.Equal(got, want) {
		t.Errorf("announce from 127.0.0.1:7003 got peers %v, want %v (everyone but the asker)", got, want)
	}
	if res.Seeders != 1 || res.Leechers != 3 {
		t.Errorf("announce reply seeders, leechers = %d, %d, want 1, 3", res.Seeders, res.Leechers)
	}
	if res.Interval != 1 {
		t.Errorf("announce reply interval = %d, want 1 (TestingConfig Interval 1s)", res.Interval)
	}
	// The seeder is listed first: same subnet for all, complete first.
	if len(res.Peers) > 0 && res.Peers[0].Port != 7000 {
		t.Errorf("first peer = port %d, want the seeder 7000", res.Peers[0].Port)
	}

	// A leecher finishes: completed counts once, even if repeated.
	announce(1, 0, anacrolixTracker.Completed)
	announce(1, 0, anacrolixTracker.Completed)
	res = announce(2, 500, anacrolixTracker.None)
	if res.Seeders != 2 || res.Leechers != 2 {
		t.Errorf("after peer 1 completed, seeders, leechers = %d, %d, want 2, 2", res.Seeders, res.Leechers)
	}

	// Scrape with anacrolix bencode over HTTP.
	sr := scrapeGet(t, srv.URL+"/scrape?info_hash="+url.QueryEscape(string(ih[:])))
	if diff := cmp.Diff(map[string]scrapeFile{string(ih[:]): {Complete: 2, Downloaded: 1, Incomplete: 2, Name: "win11"}}, sr.Files); diff != "" {
		t.Errorf("scrape mismatch (-want +got):\n%s", diff)
	}

	// Stats: uploaded/downloaded are sums of the peers' last announces.
	st, ok := tr.Swarm(ih)
	if !ok {
		t.Fatalf("Swarm(%x) = _, false, want published", ih)
	}
	if st.Peers != 4 || st.Seeders != 2 || st.Leechers != 2 || st.Completed != 1 {
		t.Errorf("Swarm stats peers/seeders/leechers/completed = %d/%d/%d/%d, want 4/2/2/1", st.Peers, st.Seeders, st.Leechers, st.Completed)
	}
	if st.Uploaded != 0+1+2+3 || st.Downloaded != 0+10+20+30 || st.Left != 500 {
		t.Errorf("Swarm stats uploaded/downloaded/left = %d/%d/%d, want 6/60/500", st.Uploaded, st.Downloaded, st.Left)
	}

	// Leaving: event=stopped removes the peer at once.
	announce(3, -1, anacrolixTracker.Stopped)
	if st, _ := tr.Swarm(ih); st.Peers != 3 {
		t.Errorf("after peer 3 stopped, Swarm peers = %d, want 3", st.Peers)
	}
}

func scrapeGet(t *testing.T, u string) scrapeReply {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %q", u, resp.StatusCode, body)
	}
	var sr scrapeReply
	if err := bencode.Unmarshal(body, &sr); err != nil {
		t.Fatalf("decoding scrape %q: %v", body, err)
	}
	return sr
}

// rawGet sends a hand-written HTTP GET over TCP, so the query reaches the
// server exactly as written (no client-side URL cleaning).
func rawGet(t *testing.T, addr, target string) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: reading response: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestAnnounceFailures(t *testing.T) {
	tr, _ := newTestTracker(t, testingConfig(t))
	ih := hashOf("image")
	tr.Publish(ih, "image")
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	// One real peer, so that a state change would show.
	announceFrom(t, tr.Handler(), "10.0.0.1:5000", query(ih, peerID(1), 6881).Encode())
	before := tr.Stats()

	esc := func(b [20]byte) string { return url.QueryEscape(string(b[:])) }
	unknown := hashOf("not published")
	good := "info_hash=" + esc(ih) + "&peer_id=" + esc(peerID(2))
	for _, tc := range []struct {
		name, target, want string
	}{
		{"unknown info_hash", "/announce?info_hash=" + esc(unknown) + "&peer_id=" + esc(peerID(2)) + "&port=1",
			"info_hash " + hex.EncodeToString(unknown[:]) + " is not published on this tracker: publish the torrent with `pxeswarm seed --tracker-listen` or `pxeswarm tracker --publish X.torrent`"},
		{"no query", "/announce", "info_hash is missing"},
		{"short info_hash", "/announce?info_hash=%00%01&peer_id=" + esc(peerID(2)) + "&port=1", "info_hash is 2 bytes, want 20"},
		{"long info_hash", "/announce?info_hash=" + strings.Repeat("a", 21) + "&peer_id=" + esc(peerID(2)) + "&port=1", "info_hash is 21 bytes"},
		{"hex info_hash", "/announce?info_hash=" + hex.EncodeToString(ih[:]) + "&peer_id=" + esc(peerID(2)) + "&port=1", "(not hex)"},
		{"short peer_id", "/announce?info_hash=" + esc(ih) + "&peer_id=abc&port=1", "peer_id is 3 bytes"},
		{"no port", "/announce?" + good, "port is missing"},
		{"port zero", "/announce?" + good + "&port=0", "port \"0\" is not in 1..65535"},
		{"port big", "/announce?" + good + "&port=70000", "not in 1..65535"},
		{"port text", "/announce?" + good + "&port=http", "not in 1..65535"},
		{"port octal-looking hex", "/announce?" + good + "&port=0x1A", "not in 1..65535"},
		{"uploaded negative", "/announce?" + good + "&port=1&uploaded=-1", "uploaded \"-1\""},
		{"downloaded float", "/announce?" + good + "&port=1&downloaded=1.5", "downloaded \"1.5\""},
		{"left text", "/announce?" + good + "&port=1&left=all", "left \"all\""},
		{"left overflow", "/announce?" + good + "&port=1&left=99999999999999999999", "too large"},
		{"bad event", "/announce?" + good + "&port=1&event=paused", "event \"paused\" is unknown"},
		{"bad numwant", "/announce?" + good + "&port=1&numwant=many", "numwant \"many\""},
		{"bad escape", "/announce?" + good + "&port=1&x=%zz", "query is malformed"},
		{"semicolon", "/announce?" + good + ";port=1", "query is malformed"},
		{"scrape short hash", "/scrape?info_hash=abc", "scrape info_hash is 3 bytes"},
		{"scrape bad escape", "/scrape?info_hash=%zz", "scrape query is malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawGet(t, addr, tc.target)
			if code != http.StatusOK {
				t.Fatalf("GET %s = HTTP %d %q, want 200 with a failure reason (BEP 3)", tc.target, code, body)
			}
			var r reply
			if err := bencode.Unmarshal(body, &r); err != nil {
				t.Fatalf("GET %s body %q: %v", tc.target, body, err)
			}
			if !strings.Contains(r.FailureReason, tc.want) {
				t.Errorf("GET %s failure reason = %q, want it to contain %q", tc.target, r.FailureReason, tc.want)
			}
			if diff := cmp.Diff(before, tr.Stats(), cmpopts.EquateComparable(netip.AddrPort{}, netip.Addr{})); diff != "" {
				t.Errorf("GET %s changed swarm state (-before +after):\n%s", tc.target, diff)
			}
		})
	}
}

func TestAnnounceNumWantAndStopped(t *testing.T) {
	cfg := testingConfig(t)
	cfg.MaxPeers = 3
	tr, _ := newTestTracker(t, cfg)
	ih := hashOf("image")
	tr.Publish(ih, "image")
	h := tr.Handler()
	for i := range 6 {
		announceFrom(t, h, fmt.Sprintf("10.0.0.%d:5000", i+1), query(ih, peerID(i), 6881).Encode())
	}
	asker := "10.0.0.1:5000"
	for _, tc := range []struct {
		extra []string
		want  int
	}{
		{nil, 3}, // MaxPeers
		{[]string{"numwant", "100"}, 3},
		{[]string{"numwant", "2"}, 2},
		{[]string{"numwant", "0"}, 0},
		{[]string{"event", "stopped"}, 0},
	} {
		r := announceFrom(t, h, asker, query(ih, peerID(0), 6881, tc.extra...).Encode())
		peers := r.compactPeers(t)
		if len(peers) != tc.want {
			t.Errorf("announce %v returned %d peers %v, want %d", tc.extra, len(peers), peers, tc.want)
		}
		if slices.Contains(peers, "10.0.0.1:6881") {
			t.Errorf("announce %v returned the asker 10.0.0.1:6881 in %v", tc.extra, peers)
		}
	}
	if st, _ := tr.Swarm(ih); st.Peers != 5 {
		t.Errorf("after event=stopped, Swarm peers = %d, want 5", st.Peers)
	}
}

// The announce port, not the TCP source port, names the peer.
func TestAnnounceUsesAnnouncedPort(t *testing.T) {
	tr, _ := newTestTracker(t, testingConfig(t))
	ih := hashOf("image")
	tr.Publish(ih, "image")
	announceFrom(t, tr.Handler(), "10.0.0.7:40001", query(ih, peerID(1), 6881).Encode())
	announceFrom(t, tr.Handler(), "10.0.0.7:40002", query(ih, peerID(1), 6881).Encode())
	st, _ := tr.Swarm(ih)
	want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.7:6881")}
	var got []netip.AddrPort
	for _, p := range st.PeerList {
		got = append(got, p.Addr)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Swarm peers = %v, want %v", got, want)
	}
}

func TestExpiry(t *testing.T) {
	cfg := testingConfig(t) // Interval 1s, PeerTTL 3s
	tr, clk := newTestTracker(t, cfg)
	ih := hashOf("image")
	tr.Publish(ih, "image")
	h := tr.Handler()
	announceFrom(t, h, "10.0.0.1:1", query(ih, peerID(1), 6881).Encode())
	clk.Advance(2 * time.Second)
	announceFrom(t, h, "10.0.0.2:1", query(ih, peerID(2), 6881, "left", "0").Encode())

	steps := []struct {
		advance time.Duration
		want    int
	}{
		{0, 2},
		{time.Second, 2},      // peer 1 at 3s: not yet past TTL
		{time.Millisecond, 1}, // peer 1 past 3s: gone
		{2 * time.Second, 0},  // peer 2 past 3s too
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		st, _ := tr.Swarm(ih)
		if st.Peers != s.want {
			t.Fatalf("step %d: Swarm peers = %d, want %d (%+v)", i, st.Peers, s.want, st.PeerList)
		}
	}
	// An expired peer that comes back is a new peer.
	r := announceFrom(t, h, "10.0.0.1:1", query(ih, peerID(1), 6881).Encode())
	if r.Complete != 0 || r.Incomplete != 1 || len(r.compactPeers(t)) != 0 {
		t.Errorf("announce after expiry = %+v, want 0 seeders, 1 leecher (itself), no peers", r)
	}
}

func TestSwarmCap(t *testing.T) {
	cfg := testingConfig(t)
	cfg.MaxSwarmPeers = 3
	tr, _ := newTestTracker(t, cfg)
	ih := hashOf("image")
	tr.Publish(ih, "image")
	h := tr.Handler()
	for i := range 3 {
		if r := announceFrom(t, h, fmt.Sprintf("10.0.0.%d:1", i+1), query(ih, peerID(i), 6881).Encode()); r.FailureReason != "" {
			t.Fatalf("announce %d: failure %q", i, r.FailureReason)
		}
	}
	r := announceFrom(t, h, "10.0.0.9:1", query(ih, peerID(9), 6881).Encode())
	if !strings.Contains(r.FailureReason, "already has 3 peers") {
		t.Errorf("4th peer failure reason = %q, want the swarm-full reason", r.FailureReason)
	}
	// Known peers still announce.
	if r := announceFrom(t, h, "10.0.0.1:1", query(ih, peerID(0), 6881).Encode()); r.FailureReason != "" {
		t.Errorf("re-announce of a known peer in a full swarm: failure %q, want success", r.FailureReason)
	}
	// TrackAnnounce reports the sentinel.
	err := tr.track(Announce{InfoHash: ih, Port: 1, Left: -1}, netip.MustParseAddrPort("10.0.0.10:1"))
	if !errors.Is(err, ErrSwarmFull) {
		t.Errorf("track(new peer in full swarm) = %v, want ErrSwarmFull", err)
	}
	if err := tr.track(Announce{InfoHash: hashOf("x"), Port: 1}, netip.MustParseAddrPort("10.0.0.10:1")); !errors.Is(err, ErrNotPublished) {
		t.Errorf("track(unpublished) = %v, want ErrNotPublished", err)
	}
	if st, _ := tr.Swarm(ih); st.Peers != 3 {
		t.Errorf("Swarm peers = %d, want 3", st.Peers)
	}
}

func TestUnpublish(t *testing.T) {
	tr, _ := newTestTracker(t, testingConfig(t))
	ih := hashOf("image")
	tr.Publish(ih, "image")
	h := tr.Handler()
	announceFrom(t, h, "10.0.0.1:1", query(ih, peerID(1), 6881).Encode())
	tr.Publish(ih, "renamed") // re-publish keeps peers
	if st, _ := tr.Swarm(ih); st.Name != "renamed" || st.Peers != 1 {
		t.Errorf("after re-publish, Swarm = %q with %d peers, want \"renamed\" with 1", st.Name, st.Peers)
	}
	tr.Unpublish(ih)
	if _, ok := tr.Swarm(ih); ok {
		t.Errorf("Swarm(%x) after Unpublish = _, true, want false", ih)
	}
	r := announceFrom(t, h, "10.0.0.1:1", query(ih, peerID(1), 6881).Encode())
	if !strings.Contains(r.FailureReason, "is not published") {
		t.Errorf("announce after Unpublish: failure reason %q, want not published", r.FailureReason)
	}
	if got := tr.Stats(); len(got) != 0 {
		t.Errorf("Stats() after Unpublish = %+v, want none", got)
	}
}

func TestScrape(t *testing.T) {
	tr, _ := newTestTracker(t, testingConfig(t))
	a, b, unknown := hashOf("a"), hashOf("b"), hashOf("unknown")
	tr.Publish(a, "alpha")
	tr.Publish(b, "beta")
	h := tr.Handler()
	announceFrom(t, h, "10.0.0.1:1", query(a, peerID(1), 6881, "left", "0").Encode())
	announceFrom(t, h, "10.0.0.2:1", query(a, peerID(2), 6881, "left", "5").Encode())
	announceFrom(t, h, "10.0.0.3:1", query(a, peerID(3), 6881, "left", "0", "event", "completed").Encode())
	announceFrom(t, h, "10.0.0.4:1", query(b, peerID(4), 6881).Encode())
	srv := httptest.NewServer(h)
	defer srv.Close()

	fa := scrapeFile{Complete: 2, Downloaded: 1, Incomplete: 1, Name: "alpha"}
	fb := scrapeFile{Complete: 0, Downloaded: 0, Incomplete: 1, Name: "beta"}
	esc := func(ih [20]byte) string { return url.QueryEscape(string(ih[:])) }
	for _, tc := range []struct {
		query string
		want  map[string]scrapeFile
	}{
		{"info_hash=" + esc(a), map[string]scrapeFile{string(a[:]): fa}},
		{"info_hash=" + esc(a) + "&info_hash=" + esc(unknown), map[string]scrapeFile{string(a[:]): fa}},
		{"info_hash=" + esc(a) + "&info_hash=" + esc(b), map[string]scrapeFile{string(a[:]): fa, string(b[:]): fb}},
		{"", map[string]scrapeFile{string(a[:]): fa, string(b[:]): fb}},
		{"info_hash=" + esc(unknown), map[string]scrapeFile{}},
	} {
		got := scrapeGet(t, srv.URL+"/scrape?"+tc.query)
		if diff := cmp.Diff(tc.want, got.Files, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("GET /scrape?%s mismatch (-want +got):\n%s", tc.query, diff)
		}
	}

	// The raw encoding: BEP 48 keys, dict keyed by the 20 raw bytes.
	var raw map[string]map[string]map[string]any
	_, body := rawGet(t, srv.Listener.Addr().String(), "/scrape?info_hash="+esc(b))
	if err := bencode.Unmarshal(body, &raw); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	want := map[string]map[string]map[string]any{"files": {string(b[:]): {
		"complete": int64(0), "downloaded": int64(0), "incomplete": int64(1), "name": "beta"}}}
	if diff := cmp.Diff(want, raw); diff != "" {
		t.Errorf("raw scrape mismatch (-want +got):\n%s", diff)
	}
}

func TestStatsJSON(t *testing.T) {
	tr, clk := newTestTracker(t, testingConfig(t))
	a, b := hashOf("a"), hashOf("b")
	tr.Publish(b, "zeta")
	tr.Publish(a, "alpha")
	h := tr.Handler()
	announceFrom(t, h, "10.0.0.1:1", query(a, peerID(1), 6881, "left", "0", "uploaded", "100", "event", "completed").Encode())
	announceFrom(t, h, "10.0.0.2:1", query(a, peerID(2), 6881, "left", "40", "uploaded", "7", "downloaded", "60").Encode())

	req := httptest.NewRequest(http.MethodGet, "/stats", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /stats Content-Type = %q, want application/json", ct)
	}
	var got []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("GET /stats = %q: %v", rec.Body.Bytes(), err)
	}
	ts := clk.Now().Format(time.RFC3339)
	want := []map[string]any{
		{
			"info_hash": hex.EncodeToString(a[:]), "name": "alpha", "peers": 2.0, "seeders": 1.0, "leechers": 1.0,
			"completed": 1.0, "uploaded": 107.0, "downloaded": 60.0, "left": 40.0,
			"peer_list": []any{
				map[string]any{"addr": "10.0.0.1:6881", "complete": true, "left": 0.0, "uploaded": 100.0, "downloaded": 0.0, "last_seen": ts},
				map[string]any{"addr": "10.0.0.2:6881", "complete": false, "left": 40.0, "uploaded": 7.0, "downloaded": 60.0, "last_seen": ts},
			},
			"hosts": []any{
				map[string]any{"addr": "10.0.0.1", "uploaded": 100.0, "downloaded": 0.0},
				map[string]any{"addr": "10.0.0.2", "uploaded": 7.0, "downloaded": 60.0},
			},
		},
		{
			"info_hash": hex.EncodeToString(b[:]), "name": "zeta", "peers": 0.0, "seeders": 0.0, "leechers": 0.0,
			"completed": 0.0, "uploaded": 0.0, "downloaded": 0.0, "left": 0.0, "peer_list": []any{}, "hosts": []any{},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /stats mismatch (-want +got):\n%s", diff)
	}
}

func TestNew(t *testing.T) {
	pfx := netip.MustParsePrefix("10.1.2.0/24")
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero", Config{}, ""},
		{"testing", testingConfig(t), ""},
		{"interval too short", Config{Interval: 500 * time.Millisecond}, "Interval 500ms is below 1s"},
		{"negative interval", Config{Interval: -time.Second}, "below 1s"},
		{"ttl shorter than interval", Config{Interval: 10 * time.Second, PeerTTL: 5 * time.Second}, "PeerTTL 5s is shorter than Interval 10s"},
		{"negative max peers", Config{MaxPeers: -1}, "MaxPeers -1 is negative"},
		{"negative swarm cap", Config{MaxSwarmPeers: -1}, "MaxSwarmPeers -1 is negative"},
		{"group without name", Config{Groups: []Group{{Prefixes: []netip.Prefix{pfx}}}}, "group 0 has no name"},
		{"group twice", Config{Groups: []Group{{Name: "r", Prefixes: []netip.Prefix{pfx}}, {Name: "r", Prefixes: []netip.Prefix{pfx}}}}, "group \"r\" is defined twice"},
		{"group empty", Config{Groups: []Group{{Name: "r"}}}, "group \"r\" has no prefixes"},
		{"group bad prefix", Config{Groups: []Group{{Name: "r", Prefixes: []netip.Prefix{{}}}}}, "invalid prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(tc.cfg, testlog.New(t))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New(%+v) = %v, want nil error", tc.cfg, err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New(%+v) = %v, %v, want error wrapping ErrBadConfig containing %q", tc.cfg, tr, err, tc.wantErr)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		tr, err := New(Config{Published: []Published{{InfoHash: hashOf("p"), Name: "p"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := tr.cfg
		if c.Interval != 10*time.Second || c.PeerTTL != 30*time.Second || c.MaxPeers != 200 || c.MaxSwarmPeers != 4096 {
			t.Errorf("New(Config{}) defaults interval/ttl/maxpeers/swarm = %v/%v/%d/%d, want 10s/30s/200/4096", c.Interval, c.PeerTTL, c.MaxPeers, c.MaxSwarmPeers)
		}
		if _, ok := c.Policy.(DefaultPolicy); !ok {
			t.Errorf("New(Config{}).Policy = %T, want DefaultPolicy", c.Policy)
		}
		if _, ok := tr.Swarm(hashOf("p")); !ok {
			t.Errorf("Config.Published hash is not published")
		}
	})
}

func TestServe(t *testing.T) {
	tr, err := New(testingConfig(t), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ih := hashOf("image")
	tr.Publish(ih, "image")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Serve(ctx, ln) }()

	res, err := anacrolixTracker.Announce{
		TrackerUrl: "http://" + ln.Addr().String() + "/announce",
		Request:    anacrolixTracker.AnnounceRequest{InfoHash: ih, PeerId: peerID(1), Port: 6881, Left: -1, NumWant: -1},
	}.Do()
	if err != nil || res.Leechers != 1 {
		t.Errorf("announce to Serve = %+v, %v, want 1 leecher", res, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Errorf("listener %v still accepts after Serve returned", ln.Addr())
	}
}

func TestStart(t *testing.T) {
	t.Run("cancel returns nil", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := testingConfig(t).Start(ctx, testlog.New(t)); err != nil {
			t.Errorf("Start until cancel = %v, want nil", err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			cfg  Config
			want string
		}{
			{Config{}, "Listen is empty"},
			{Config{Listen: "127.0.0.1:notaport"}, "listening on 127.0.0.1:notaport"},
			{Config{Listen: "127.0.0.1:0", Interval: time.Millisecond}, "below 1s"},
		} {
			err := tc.cfg.Start(context.Background(), testlog.New(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Config{Listen: %q}.Start = %v, want error containing %q", tc.cfg.Listen, err, tc.want)
			}
		}
	})
}

// An Unpublish between the handler's check and TrackAnnounce still ends
// as a failure reason, not anacrolix's HTTP 500.
func TestAnnounceRaceWithUnpublish(t *testing.T) {
	tr, clk := newTestTracker(t, testingConfig(t))
	ih := hashOf("image")
	tr.Publish(ih, "image")
	calls := 0
	tr.now = func() time.Time {
		calls++
		if calls == 2 { // 1: serveAnnounce's admit, 2: TrackAnnounce
			go tr.Unpublish(ih)
			for tr.admit(Announce{InfoHash: ih}, netip.AddrPort{}) == nil {
				time.Sleep(time.Millisecond)
			}
		}
		return clk.Now()
	}
	r := announceFrom(t, tr.Handler(), "10.0.0.1:1", query(ih, peerID(1), 6881).Encode())
	if !strings.Contains(r.FailureReason, "is not published") {
		t.Errorf("announce racing Unpublish = %+v, want a not-published failure reason", r)
	}
}

// TestHostTotals: a host's uploaded and downloaded bytes keep counting
// across its peer stays (stopped, expired, a restarted client on the same
// port) without being counted twice.
func TestHostTotals(t *testing.T) {
	ih := hashOf("lab")
	tr, clk := newTestTracker(t, Config{Published: []Published{{InfoHash: ih, Name: "lab"}}})
	a := netip.MustParseAddrPort("198.18.0.11:6881")
	b := netip.MustParseAddrPort("198.18.0.12:6881")
	ann := func(addr netip.AddrPort, up, down int64, ev string) {
		t.Helper()
		if err := tr.track(Announce{InfoHash: ih, PeerID: peerID(int(addr.Addr().As4()[3])), Port: addr.Port(), Left: 1,
			Uploaded: up, Downloaded: down, Event: ev}, addr); err != nil {
			t.Fatalf("track(%v) = %v", addr, err)
		}
	}
	ann(a, 0, 0, EventStarted)
	ann(a, 100, 1000, "")
	ann(a, 300, 2000, "") // +200 up, +1000 down
	ann(b, 50, 0, EventStarted)
	ann(a, 400, 2500, EventStopped) // gone, its last 100/500 still count
	clk.Advance(time.Hour)          // b expires with 50/0
	ann(b, 70, 10, "")              // back on the same port: +20/+10, not 70/10 again
	ann(a, 5, 5, EventStarted)      // a restarted client: counters from 0 again
	st, ok := tr.Swarm(ih)
	if !ok {
		t.Fatal("Swarm: not published")
	}
	want := []HostStats{
		{Addr: a.Addr(), Uploaded: 405, Downloaded: 2505},
		{Addr: b.Addr(), Uploaded: 70, Downloaded: 10},
	}
	if diff := cmp.Diff(want, st.Hosts, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("Hosts mismatch (-want +got):\n%s", diff)
	}
	if st.Uploaded != 75 { // current peers only: a's new session 5 + b 70
		t.Errorf("Uploaded (current peers) = %d, want 75", st.Uploaded)
	}
}

// TestOneHostCannotCrowd: one LAN address announcing thousands of made-up
// peers holds MaxPeersPerHost of them, so real machines still join; and
// made-up complete peers from many addresses do not push the image host's
// seeder out of a new machine's reply.
func TestOneHostCannotCrowd(t *testing.T) {
	cfg := testingConfig(t)
	cfg.MaxSwarmPeers = DefaultMaxSwarmPeers
	cfg.MaxPeersPerHost = 0 // the default
	cfg.Trusted = []netip.Addr{netip.MustParseAddr("198.18.0.1")}
	tr, _ := newTestTracker(t, cfg)
	ih := hashOf("image")
	tr.Publish(ih, "image")
	h := tr.Handler()
	refused := 0
	for i := range DefaultMaxSwarmPeers + 100 {
		r := announceFrom(t, h, "198.18.0.66:4000", query(ih, peerID(i), 1024+i, "left", "0").Encode())
		if r.FailureReason != "" {
			if !strings.Contains(r.FailureReason, "already has 4 peers") {
				t.Fatalf("announce %d from the flooding host: failure %q, want the per-host reason", i, r.FailureReason)
			}
			refused++
		}
	}
	if want := DefaultMaxSwarmPeers + 100 - DefaultMaxPeersPerHost; refused != want {
		t.Errorf("flooding host: %d announces refused, want %d (all but %d)", refused, want, DefaultMaxPeersPerHost)
	}
	// Made-up complete peers from 100 more addresses, 4 each.
	for host := range 100 {
		for i := range DefaultMaxPeersPerHost {
			r := announceFrom(t, h, fmt.Sprintf("198.18.1.%d:4000", host+1), query(ih, peerID(10000+host*10+i), 2000+i, "left", "0").Encode())
			if r.FailureReason != "" {
				t.Fatalf("fake peer %d/%d: %q", host, i, r.FailureReason)
			}
		}
	}
	// The image host seeds (it may hold more than 4: it is trusted).
	for i := range 6 {
		if r := announceFrom(t, h, "198.18.0.1:6881", query(ih, peerID(90000+i), 6881+i, "left", "0").Encode()); r.FailureReason != "" {
			t.Fatalf("image host's seeder %d: %q", i, r.FailureReason)
		}
	}
	// A real machine joins and is told about the image host first.
	r := announceFrom(t, h, "198.18.0.101:1", query(ih, peerID(5), 6881, "numwant", "10").Encode())
	if r.FailureReason != "" {
		t.Fatalf("a real machine could not join: %q", r.FailureReason)
	}
	peers := r.compactPeers(t)
	seeders := 0
	for _, p := range peers {
		if strings.HasPrefix(p, "198.18.0.1:") {
			seeders++
		}
	}
	if len(peers) != 10 || seeders != 6 {
		t.Errorf("reply to a new machine = %v, want 10 peers with the image host's 6 seeders among them", peers)
	}
	// Loopback (processes on the image host) is not capped either.
	for i := range 8 {
		if r := announceFrom(t, h, "127.0.0.1:1", query(ih, peerID(70000+i), 7000+i).Encode()); r.FailureReason != "" {
			t.Fatalf("loopback peer %d: %q", i, r.FailureReason)
		}
	}
}
