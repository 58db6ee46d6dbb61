package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/loopdev"

	"github.com/pxeswarm/pxeswarm/internal/testnet"

	"github.com/anacrolix/torrent/bencode"
)

// TestSwarmEightLeechers: one seeder with the tracker, eight `pxeswarm
// fetch` processes, a 256+ MiB image in three parts. Every target must end
// byte-identical, and the leechers must have traded with each other.
func TestSwarmEightLeechers(t *testing.T) {
	img := makeImage(t, []int64{32 << 20, 200<<20 + 4321, 40 << 20}, "8MiB")
	seed := img.seed(t, img.parts, true)
	dir := t.TempDir()
	var fetchers []*proc
	var targets [][]string
	for i := range 8 {
		ts := img.targets(dir, fmt.Sprintf("leecher%d", i))
		targets = append(targets, ts)
		fetchers = append(fetchers, start(t, fetchArgs(img, ts, "--seed-for", "3s")...))
	}
	var fromPeers int64
	for i, f := range fetchers {
		if err := f.wait(t, 4*time.Minute); err != nil {
			t.Fatalf("fetcher %d: %v", i, err)
		}
		img.checkSame(t, targets[i])
		fromPeers += f.received(t)
	}
	stats := trackerStats(t, img)
	t.Logf("tracker stats: %s", stats)
	seed.cmd.Process.Signal(os.Interrupt)
	seed.wait(t, 30*time.Second)
	m := regexp.MustCompile(`uploaded_bytes=(\d+)`).FindStringSubmatch(seed.output())
	if m == nil {
		t.Fatalf("seeder printed no uploaded_bytes")
	}
	var seederSent int64
	fmt.Sscan(m[1], &seederSent)
	t.Logf("seeder sent %.2f× the image; leechers received %.2f× in total",
		float64(seederSent)/float64(img.im.Length), float64(fromPeers)/float64(img.im.Length))
	// 8 copies were delivered; if the seeder sent them all, the swarm
	// did nothing.
	if seederSent >= 8*img.im.Length {
		t.Errorf("seeder sent %d bytes, the leechers needed %d: the leechers did not trade", seederSent, 8*img.im.Length)
	}
}

// TestSwarmCorruptPeer: a second "seeder" serves an image whose bytes are
// damaged in many pieces. Leechers must detect the bad pieces, drop that
// peer, and still end byte-identical.
func TestSwarmCorruptPeer(t *testing.T) {
	img := makeImage(t, []int64{48 << 20, 16 << 20}, "1MiB")
	img.seed(t, img.parts, true)
	// The bad copy: every third piece damaged.
	bad := filepath.Join(t.TempDir(), "bad")
	os.Mkdir(bad, 0o755)
	var badParts []string
	for i, p := range img.parts {
		b, _ := os.ReadFile(p)
		for off := 0; off < len(b); off += 3 << 20 {
			copy(b[off+1000:], "corrupted by a bad peer")
		}
		bp := filepath.Join(bad, fmt.Sprintf("p%d", i))
		os.WriteFile(bp, b, 0o644)
		badParts = append(badParts, bp)
	}
	img.seed(t, badParts, false)
	dir := t.TempDir()
	var fetchers []*proc
	for i := range 4 {
		fetchers = append(fetchers, start(t, fetchArgs(img, img.targets(dir, fmt.Sprint(i)), "--log-level", "info")...))
	}
	var banned, badPieces int
	for i, f := range fetchers {
		if err := f.wait(t, 3*time.Minute); err != nil {
			t.Fatalf("fetcher %d: %v", i, err)
		}
		img.checkSame(t, img.targets(dir, fmt.Sprint(i)))
		out := f.output()
		if strings.Contains(out, "banning peer") || strings.Contains(out, "banned") {
			banned++
		}
		var n int
		if m := regexp.MustCompile(`bad_pieces=(\d+)`).FindStringSubmatch(out); m != nil {
			fmt.Sscan(m[1], &n)
		}
		badPieces += n
	}
	t.Logf("%d of %d fetchers banned the bad peer; %d bad pieces detected in all", banned, len(fetchers), badPieces)
	if badPieces == 0 {
		t.Errorf("no fetcher detected a bad piece: the corrupt peer was never used, so the test proved nothing")
	}
	if banned == 0 {
		t.Errorf("no fetcher dropped the corrupt peer")
	}
}

// TestVerifyFetchesOnlyMissing: a target that already holds 90% of the
// image receives no more than the missing pieces.
func TestVerifyFetchesOnlyMissing(t *testing.T) {
	img := makeImage(t, []int64{60 << 20, 20 << 20}, "1MiB")
	img.seed(t, img.parts, true)
	targets := img.targets(t.TempDir(), "t")
	for i, p := range img.parts {
		b, _ := os.ReadFile(p)
		// Zero every tenth MiB: 10% of the pieces.
		for off := 5 << 20; off < len(b); off += 10 << 20 {
			clear(b[off : off+1<<20])
		}
		os.WriteFile(targets[i], b, 0o644)
	}
	missing := missingBytes(t, img, targets)
	if missing == 0 || missing > img.im.Length/8 {
		t.Fatalf("test setup: %d bytes missing of %d, want about 10%%", missing, img.im.Length)
	}
	f := start(t, fetchArgs(img, targets, "--check", "verify")...)
	if err := f.wait(t, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	img.checkSame(t, targets)
	got := f.received(t)
	t.Logf("missing %d bytes, received %d", missing, got)
	if got > missing || got < missing/2 {
		t.Errorf("verify fetch received %d bytes, want at most the %d missing (and more than half of them)", got, missing)
	}
}

// TestResumeAfterKill: a fetch killed halfway and restarted with --check
// verify fetches no more than what was still missing.
func TestResumeAfterKill(t *testing.T) {
	img := makeImage(t, []int64{64 << 20, 32 << 20}, "1MiB")
	img.seed(t, img.parts, true)
	targets := img.targets(t.TempDir(), "t")
	f := start(t, fetchArgs(img, targets, "--download-limit", "24MiB")...)
	f.waitFor(t, regexp.MustCompile(`downloading\s+([4-7]\d)\.\d%`), time.Minute)
	f.cmd.Process.Kill()
	f.wait(t, 10*time.Second)
	missing := missingBytes(t, img, targets)
	t.Logf("killed with %d of %d bytes missing", missing, img.im.Length)
	if missing == 0 || missing == img.im.Length {
		t.Fatalf("kill did not land halfway: %d of %d bytes missing", missing, img.im.Length)
	}
	r := start(t, fetchArgs(img, targets, "--check", "verify")...)
	if err := r.wait(t, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	img.checkSame(t, targets)
	if got := r.received(t); got > missing {
		t.Errorf("resumed fetch received %d bytes, want at most the %d missing", got, missing)
	}
}

// TestBadInput: each bad input gets a clear error and leaves targets as
// they were.
func TestBadInput(t *testing.T) {
	img := makeImage(t, []int64{4 << 20, 2 << 20}, "1MiB")
	dir := t.TempDir()
	good, _ := os.ReadFile(img.torrent)
	truncated := filepath.Join(dir, "truncated.torrent")
	os.WriteFile(truncated, good[:len(good)/2], 0o644)
	garbage := filepath.Join(dir, "garbage.torrent")
	os.WriteFile(garbage, []byte("<html>404 not found</html>"), 0o644)
	keep := filepath.Join(dir, "keep.img")
	os.WriteFile(keep, []byte("precious bytes that must survive"), 0o644)
	fresh := filepath.Join(dir, "fresh.img")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"truncated torrent", []string{"fetch", "--torrent", truncated, "--target", fresh + "," + keep}, "bad image torrent"},
		{"garbage torrent", []string{"fetch", "--torrent", garbage, "--target", fresh + "," + keep}, "not a torrent file"},
		{"target smaller than image", []string{"fetch", "--torrent", img.torrent, "--target", fresh + "," + keep}, "smaller than its image part"},
		{"wrong number of targets", []string{"fetch", "--torrent", img.torrent, "--target", keep}, "name one per part"},
		{"missing source", []string{"mktorrent", "-o", filepath.Join(dir, "x.torrent"), filepath.Join(dir, "nope.img")}, "does not exist"},
		{"missing seed source", []string{"seed", "--torrent", img.torrent, "--source", img.parts[0] + "," + filepath.Join(dir, "nope.img"), "--listen", "127.0.0.1:0"}, "does not exist"},
		{"bad check mode", []string{"fetch", "--torrent", img.torrent, "--target", fresh, "--check", "maybe"}, "want one of fresh, verify"},
		{"bad piece size", []string{"mktorrent", "--piece-size", "3MiB", "-o", filepath.Join(dir, "y.torrent"), img.parts[0]}, "power of two"},
	} {
		out, err := run(t, tc.args...)
		if err == nil {
			t.Errorf("%s: pxeswarm %s succeeded, want an error", tc.name, tc.args[0])
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: output %q does not contain %q", tc.name, out, tc.want)
		}
		if b, _ := os.ReadFile(keep); string(b) != "precious bytes that must survive" {
			t.Fatalf("%s: target was changed to %q", tc.name, b)
		}
		if _, err := os.Stat(fresh); err == nil {
			t.Fatalf("%s: target %s was created", tc.name, fresh)
		}
	}
}

// TestBadInputBlockDevice: a loop device smaller than the image is refused
// and left untouched.
func TestBadInputBlockDevice(t *testing.T) {
	img := makeImage(t, []int64{4 << 20}, "1MiB")
	backing := filepath.Join(t.TempDir(), "small.disk")
	writeRandom(t, backing, 2<<20, 99)
	before := fileSHA1(t, backing)
	loop := loopdev.Attach(t, backing, false)
	res, err := run(t, "fetch", "--torrent", img.torrent, "--target", loop)
	if err == nil || !strings.Contains(res, "smaller than its image part") {
		t.Errorf("fetch onto a 2 MiB loop device: err %v, output %q; want a too-small error", err, res)
	}
	if after := fileSHA1(t, backing); after != before {
		t.Errorf("loop device content changed")
	}
}

// TestTrackerRefusesBadAnnounces: the tracker answers an unknown info-hash
// and garbage queries with a bencoded failure reason, and keeps serving.
func TestTrackerRefusesBadAnnounces(t *testing.T) {
	img := makeImage(t, []int64{1 << 20}, "1MiB")
	port := testnet.FreePort(t)
	tr := start(t, "tracker", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--publish", img.torrent)
	tr.waitFor(t, regexp.MustCompile(`serving`), 20*time.Second)
	base := fmt.Sprintf("http://127.0.0.1:%d/announce?", port)
	id := strings.Repeat("a", 20)
	for _, tc := range []struct{ name, query, want string }{
		{"unknown info-hash", "info_hash=" + url.QueryEscape(strings.Repeat("z", 20)) + "&peer_id=" + id + "&port=6881", "not published"},
		{"short info-hash", "info_hash=abc&peer_id=" + id + "&port=6881", "info_hash"},
		{"no port", "info_hash=" + url.QueryEscape(string(img.im.InfoHash[:])) + "&peer_id=" + id, "port"},
		{"bad event", "info_hash=" + url.QueryEscape(string(img.im.InfoHash[:])) + "&peer_id=" + id + "&port=1&event=explode", "event"},
		{"garbage", "%%%%&&&==", ""},
	} {
		resp, err := http.Get(base + tc.query)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var reply struct {
			Failure string `bencode:"failure reason"`
		}
		if err := bencode.Unmarshal(body, &reply); err != nil || reply.Failure == "" {
			t.Errorf("%s: reply %q is not a bencoded failure reason", tc.name, body)
			continue
		}
		if !strings.Contains(reply.Failure, tc.want) {
			t.Errorf("%s: failure reason %q does not mention %q", tc.name, reply.Failure, tc.want)
		}
	}
	// The published swarm is still empty: nothing bad was tracked.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"peers": 0`) && !strings.Contains(string(body), `"peers":0`) {
		t.Errorf("stats after bad announces: %s, want no peers", body)
	}
}

func trackerStats(t *testing.T, img *image) string {
	u := strings.TrimSuffix(img.announce, "/announce") + "/stats"
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
