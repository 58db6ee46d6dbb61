package imager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// startSession starts cfg without a tracker (peers are given directly in
// cfg.Peers) and closes it when the test ends.
func startSession(t *testing.T, cfg Config) *Session {
	t.Helper()
	cfg.Trackers = []string{}
	s, err := cfg.Join(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startSeed(t *testing.T, im *Image, srcs []string) *Session {
	t.Helper()
	cfg := testingConfig(t)
	cfg.Image, cfg.Paths, cfg.Mode = im, srcs, ModeSeed
	return startSession(t, cfg)
}

// startFetch starts a fresh fetch of im into target from peers, in the
// background (see fetch for one that waits).
func startFetch(t *testing.T, im *Image, target string, peers ...string) *Session {
	t.Helper()
	cfg := testingConfig(t)
	cfg.Image, cfg.Paths, cfg.Mode, cfg.Peers = im, []string{target}, ModeFresh, peers
	return startSession(t, cfg)
}

func fetch(t *testing.T, im *Image, targets []string, mode Mode, peers ...string) Progress {
	t.Helper()
	cfg := testingConfig(t)
	cfg.Image, cfg.Paths, cfg.Mode, cfg.Peers = im, targets, mode, peers
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := cfg.Run(ctx, testlog.New(t), 0)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return p
}

func sameFiles(t *testing.T, want, got []string) {
	t.Helper()
	for i := range want {
		a, _ := os.ReadFile(want[i])
		b, _ := os.ReadFile(got[i])
		if !bytes.Equal(a, b) {
			t.Errorf("target %s differs from source %s (%d vs %d bytes)", got[i], want[i], len(b), len(a))
		}
	}
}

func TestSeedAndFetchDirect(t *testing.T) {
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{5<<20 + 999, 3 << 20}, 1<<20)
	seed := startSeed(t, im, srcs)
	targets := []string{filepath.Join(dir, "t1"), filepath.Join(dir, "t2")}
	p := fetch(t, im, targets, ModeFresh, seed.ListenAddr())
	sameFiles(t, srcs, targets)
	if p.Downloaded < im.Length {
		t.Errorf("Downloaded = %d, want at least the image's %d bytes", p.Downloaded, im.Length)
	}
	if p.State != StateDone {
		t.Errorf("final State = %s, want %s", p.State, StateDone)
	}
}

func TestVerifyFetchesOnlyMissing(t *testing.T) {
	dir := t.TempDir()
	const pl = 1 << 20
	im, srcs := makeImage(t, dir, []int64{12 << 20, 8<<20 + 5}, pl)
	seed := startSeed(t, im, srcs)
	targets := []string{filepath.Join(dir, "t1"), filepath.Join(dir, "t2")}
	for i := range srcs {
		b, _ := os.ReadFile(srcs[i])
		os.WriteFile(targets[i], b, 0o644)
	}
	// Damage two pieces in the first part and one in the second.
	damage := []struct {
		file int
		off  int64
	}{{0, 3*pl + 17}, {0, 7 * pl}, {1, 2*pl + 1}}
	for _, d := range damage {
		f, _ := os.OpenFile(targets[d.file], os.O_RDWR, 0)
		f.WriteAt([]byte("damaged!"), d.off)
		f.Close()
	}
	p := fetch(t, im, targets, ModeVerify, seed.ListenAddr())
	sameFiles(t, srcs, targets)
	max := int64(len(damage)) * pl
	if p.Downloaded > max || p.Downloaded == 0 {
		t.Errorf("verify fetch received %d bytes, want 1..%d (only the %d damaged pieces)", p.Downloaded, max, len(damage))
	}
}

func TestStateFileResume(t *testing.T) {
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{4 << 20}, 1<<20)
	seed := startSeed(t, im, srcs)
	targets := []string{filepath.Join(dir, "t1")}
	state := filepath.Join(dir, "state")
	cfg := testingConfig(t)
	cfg.Image, cfg.Paths, cfg.Mode, cfg.Peers, cfg.StateFile = im, targets, ModeFresh, []string{seed.ListenAddr()}, state
	if _, err := cfg.Run(context.Background(), testlog.New(t), 0); err != nil {
		t.Fatal(err)
	}
	// A second run with the saved state fetches nothing.
	p, err := cfg.Run(context.Background(), testlog.New(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Downloaded != 0 {
		t.Errorf("resumed complete fetch received %d bytes, want 0", p.Downloaded)
	}
	// A state for another image is refused before anything is written.
	other, _ := makeImage(t, t.TempDir(), []int64{4<<20 - 1}, 1<<20)
	cfg.Image = other
	if _, err := cfg.Join(context.Background(), testlog.New(t)); err == nil {
		t.Errorf("Join with another image's state file: want an error")
	}
	sameFiles(t, srcs, targets)
}

func TestTargetChecks(t *testing.T) {
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{2 << 20, 1 << 20}, 1<<20)
	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("precious data"), 0o644)
	for _, tc := range []struct {
		name  string
		paths []string
		mode  Mode
	}{
		{"too few targets", []string{filepath.Join(dir, "a")}, ModeFresh},
		{"target too small", []string{filepath.Join(dir, "b"), small}, ModeFresh},
		{"missing source", []string{srcs[0], filepath.Join(dir, "nope")}, ModeSeed},
		{"wrong source", []string{srcs[1], srcs[0]}, ModeSeed},
	} {
		cfg := testingConfig(t)
		cfg.Image, cfg.Paths, cfg.Mode = im, tc.paths, tc.mode
		if s, err := cfg.Join(context.Background(), testlog.New(t)); err == nil {
			s.Close()
			t.Errorf("%s: Join() = nil error, want one", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if b, _ := os.ReadFile(small); string(b) != "precious data" {
		t.Errorf("small target was changed to %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "b")); err == nil {
		t.Errorf("first target was created although the second was refused")
	}
}

// TestOneConnectionPerPeer: two machines that each dial the other keep one
// connection between them, not two. anacrolix keeps both by default, and
// then 8 connections were only 4 partners: on the bench LAN, machines that
// joined late found every slot of the machines that had data taken.
func TestOneConnectionPerPeer(t *testing.T) {
	dir := t.TempDir()
	im, _ := makeImage(t, dir, []int64{2 << 20}, 0)
	a := startFetch(t, im, filepath.Join(dir, "a"))
	b := startFetch(t, im, filepath.Join(dir, "b"), a.ListenAddr())
	// Now a dials b too, as a tracker would have told it to.
	a.t.AddPeers([]torrent.PeerInfo{{Addr: netip.MustParseAddrPort(b.ListenAddr()), Source: torrent.PeerSourceDirect}})
	// Both dials complete within milliseconds on loopback; give them time,
	// and anacrolix time to drop the duplicate.
	var na, nb int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		na, nb = len(a.t.PeerConns()), len(b.t.PeerConns())
		if na >= 1 && nb >= 1 && time.Until(deadline) < 3*time.Second {
			break
		}
	}
	if na != 1 || nb != 1 {
		t.Errorf("connections between two machines: a has %d, b has %d, want 1 each", na, nb)
	}
}

// TestPartnerRequestsCapped: a fetching machine keeps Tuning.PartnerRequests
// chunk requests outstanding with another pxeswarm fetching machine, and
// anacrolix's own cap (the reqq the peer advertises) with the image host.
// The cap is read from anacrolix's status page, which prints each
// connection's peer ID and then "reqq: …/(nominal/peer max)".
func TestPartnerRequestsCapped(t *testing.T) {
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{8 << 20}, 0)
	// The image host sends slowly, so the fetching machines are still at
	// it, and connected, when we look. (A download limit would not do:
	// anacrolix refuses new connections while its limiter is empty.)
	scfg := testingConfig(t)
	scfg.Image, scfg.Paths, scfg.Mode = im, srcs, ModeSeed
	scfg.Tuning.UploadLimit = 512 << 10
	seed := startSession(t, scfg)
	a := startFetch(t, im, filepath.Join(dir, "a"), seed.ListenAddr())
	b := startFetch(t, im, filepath.Join(dir, "b"), seed.ListenAddr(), a.ListenAddr())
	peerID := regexp.MustCompile(`^peer id: .*` + protocol.PeerIDPrefix + `([A-Z])`)
	reqq := regexp.MustCompile(`reqq: \d+\+\d+/\(\d+/(\d+)\)`)
	var caps map[byte]string
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var buf bytes.Buffer
		b.cl.WriteStatus(&buf)
		last = buf.String()
		caps = map[byte]string{}
		var mark byte
		for _, line := range strings.Split(buf.String(), "\n") {
			line = strings.TrimSpace(line)
			if m := peerID.FindStringSubmatch(line); m != nil {
				mark = m[1][0]
			}
			if m := reqq.FindStringSubmatch(line); m != nil && mark != 0 {
				caps[mark] = m[1]
				mark = 0
			}
		}
		// Before the extended handshake anacrolix assumes 250.
		if caps[protocol.RoleMachine] == "1" && caps[protocol.RoleSeeder] != "" && caps[protocol.RoleSeeder] != "250" {
			break
		}
	}
	if caps[protocol.RoleMachine] != "1" {
		t.Errorf("requests allowed to the other fetching machine: %q, want 1 (Tuning.PartnerRequests)", caps[protocol.RoleMachine])
		for _, l := range strings.Split(last, "\n") {
			if strings.Contains(l, "peer id:") || strings.Contains(l, "reqq:") || strings.Contains(l, "127.0.0.1") {
				t.Log(l)
			}
		}
	}
	if c := caps[protocol.RoleSeeder]; c == "" || c == "1" || c == "250" {
		t.Errorf("requests allowed to the image host: %q, want what it advertises (not capped)", c)
	}
}

// TestWriteErrorFailsFast: a target whose writes fail (/dev/full answers
// every write with ENOSPC) ends the fetch within seconds with ErrWrite,
// the device and the offset, instead of waiting for pieces that can never
// land (anacrolix only disables the torrent on a write error).
func TestWriteErrorFailsFast(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("no /dev/full to write to (%v): this test needs a Linux /dev", err)
	}
	defer full.Close()
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{4 << 20}, 0)
	seed := startSeed(t, im, srcs)
	cfg := testingConfig(t)
	cfg.Image, cfg.Parts, cfg.Mode, cfg.Peers = im, []Part{{RW: full, Length: im.Length}}, ModeFresh, []string{seed.ListenAddr()}
	s := startSession(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = s.Wait(ctx)
	took := time.Since(start)
	if !errors.Is(err, ErrWrite) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Wait() on /dev/full = %v after %v, want ErrWrite wrapping ENOSPC", err, took)
	}
	for _, want := range []string{"/dev/full", "part 1 at byte", "the disk may be failing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Wait() error %q does not say %q", err, want)
		}
	}
	if took > 10*time.Second {
		t.Errorf("the write error ended the fetch after %v, want under 10s", took)
	}
	if p := s.Progress(); p.State != StateFailed {
		t.Errorf("Progress().State = %v after a write error, want %v", p.State, StateFailed)
	}
}

// TestStoppedIsNotDone: a fetch that ends before every piece is verified
// (here: no peer has the image, and the caller gives up) closes as
// "stopped", never "done".
func TestStoppedIsNotDone(t *testing.T) {
	dir := t.TempDir()
	im, _ := makeImage(t, dir, []int64{1 << 20}, 0)
	cfg := testingConfig(t)
	cfg.Image, cfg.Paths, cfg.Mode, cfg.Trackers = im, []string{filepath.Join(dir, "target")}, ModeFresh, []string{}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	p, err := cfg.Run(ctx, testlog.New(t), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run with no peers = %v, want the context's deadline", err)
	}
	if p.State != StateStopped || p.Done != 0 {
		t.Errorf("Run with no peers: state %s with %d bytes verified, want %s with 0", p.State, p.Done, StateStopped)
	}
}

// TestStockTorrents: torrents made by a stock tool (transmission-create)
// are images: a single-file torrent's file is the whole target, a
// directory's files are parts 1 to n in order. Each is fetched
// byte-identical from a pxeswarm seeder of the same files.
func TestStockTorrents(t *testing.T) {
	needs.Tool(t, "transmission-create")
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	write := func(path string, n int) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	single := filepath.Join(dir, "disk.img")
	write(single, 3<<20+4321)
	os.Mkdir(filepath.Join(dir, "parts"), 0o755)
	multi := []string{filepath.Join(dir, "parts", "a.img"), filepath.Join(dir, "parts", "b.img")}
	write(multi[0], 1<<20+17)
	write(multi[1], 2<<20)
	for _, tc := range []struct {
		name    string
		src     string
		sources []string
		numbers []int
	}{
		{"single file", single, []string{single}, []int{0}},
		{"directory", filepath.Join(dir, "parts"), multi, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tf := filepath.Join(t.TempDir(), "stock.torrent")
			if out, err := exec.Command("transmission-create", "-o", tf, "-s", "32", tc.src).CombinedOutput(); err != nil {
				t.Fatalf("transmission-create: %v\n%s", err, out)
			}
			im, err := LoadFile(tf)
			if err != nil {
				t.Fatalf("LoadFile(transmission-create's torrent) = %v, want an image", err)
			}
			if len(im.Files) != len(tc.numbers) {
				t.Fatalf("image has %d parts, want %d", len(im.Files), len(tc.numbers))
			}
			for i, f := range im.Files {
				if f.Part.Number != tc.numbers[i] || im.Layout.Table != "" {
					t.Errorf("part %d (%s) is partition %d in table %q, want %d and no table", i, f.Path, f.Part.Number, im.Layout.Table, tc.numbers[i])
				}
			}
			seed := startSeed(t, im, tc.sources)
			var targets []string
			for i := range tc.sources {
				targets = append(targets, filepath.Join(t.TempDir(), fmt.Sprint("target", i)))
			}
			fetch(t, im, targets, ModeFresh, seed.ListenAddr())
			for i, src := range tc.sources {
				want, _ := os.ReadFile(src)
				got, _ := os.ReadFile(targets[i])
				if !bytes.Equal(got, want) {
					t.Errorf("target %d differs from %s", i, src)
				}
			}
		})
	}
}

// syncCounter is a part that counts its flushes.
type syncCounter struct {
	ReadWriterAt
	n atomic.Int32
}

func (c *syncCounter) Sync() error { c.n.Add(1); return nil }

// TestFetchFlushesTargets: while a fetch runs, its targets (here a part
// as the agent passes them, with no state file) are flushed every
// FlushEvery, so a power cut loses only the last seconds of pieces. They
// were flushed only at the end, or with a state file only for targets the
// session opened itself: a machine whose power was cut lost everything
// still in its page cache.
func TestFetchFlushesTargets(t *testing.T) {
	dir := t.TempDir()
	im, _ := makeImage(t, dir, []int64{1 << 20}, 0)
	f, err := os.Create(filepath.Join(dir, "target"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	part := &syncCounter{ReadWriterAt: f}
	cfg := testingConfig(t)
	cfg.Image, cfg.Parts, cfg.Mode, cfg.Trackers = im, []Part{{RW: part, Length: im.Length}}, ModeFresh, []string{}
	cfg.FlushEvery = 50 * time.Millisecond
	s := startSession(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Wait(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for part.n.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := part.n.Load()
	cancel()
	<-done
	if got < 3 {
		t.Errorf("the target was flushed %d times while the fetch ran, want one every FlushEvery", got)
	}
}
