package capture

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/loopdev"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/usedmap"
)

// TestBoundsAgree: the manifest's extent bound is the torrent's, so a
// manifest the server takes always makes a torrent imager takes.
func TestBoundsAgree(t *testing.T) {
	if protocol.MaxCaptureExtents != imager.MaxExtents {
		t.Errorf("protocol.MaxCaptureExtents = %d, imager.MaxExtents = %d: keep them equal", protocol.MaxCaptureExtents, imager.MaxExtents)
	}
}

const testToken = "capture-test-admin-token-0123456789"

// testServer is an in-process boot server with captures on (no seeders:
// the published image's files are checked directly).
type testServer struct {
	url  string
	dir  string // capture dir
	caps *pxe.Captures
	cat  *catalog.Catalog
}

func newTestServer(t *testing.T, captureDir string, wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	log := testlog.New(t)
	store, err := pxe.OpenStore(filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	_, key, _ := ed25519.GenerateKey(nil)
	cat := catalog.New(catalog.Config{}, log)
	ctx, cancel := context.WithCancel(context.Background())
	caps, err := pxe.OpenCaptures(pxe.CaptureConfig{Dir: captureDir, Catalog: cat, Margin: 1 << 20, SyncEvery: 4 << 20, Ctx: ctx}, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{url: "http://" + ln.Addr().String(), dir: captureDir, caps: caps, cat: cat}
	cfg := pxe.HTTPConfig{PublicURL: s.url, Store: store, Key: key, Catalog: cat, AdminToken: testToken, Captures: caps,
		Trackers: []string{s.url + "/announce"}}
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(ctx, log, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		caps.Wait()
	})
	if wrap != nil {
		// The uploader talks to the server through wrap's listener.
		front, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { front.Close() })
		go proxy(wrap(front), ln.Addr().String())
		s.url = "http://" + front.Addr().String()
	}
	return s
}

// loopDev attaches file as a loop device until the test ends.
func loopDev(t *testing.T, file string) string {
	return loopdev.Attach(t, file, false)
}

// ext4Disk makes an ext4 filesystem of size bytes over random bytes, on
// a loop device.
func ext4Disk(t *testing.T, size int64, files, maxFile int) (dev string, v *fstest.Volume) {
	t.Helper()
	img := fstest.RandomFile(t, "golden.img", size, 7)
	v = fstest.MakeExt(t, img, fstest.NewFiles(t, files, maxFile), "-t", "ext4")
	return loopDev(t, img), v
}

func (s *testServer) config(disk, name string) Config {
	return Config{Server: s.url, Token: testToken, Name: name, Disk: disk, Backoff: 50 * time.Millisecond}
}

// TestCaptureRefuses: a hibernated NTFS, a BitLocker volume and a mounted
// ext4 are refused before the server is asked anything, each with what
// to do; --raw takes the Windows volumes whole, --force the mounted one.
func TestCaptureRefuses(t *testing.T) {
	s := newTestServer(t, t.TempDir(), nil)
	ntfs := func(t *testing.T) string {
		img := fstest.RandomFile(t, "ntfs.img", 16<<20, 5)
		fstest.MakeNTFS(t, img, fstest.NewFiles(t, 8, 64<<10))
		return img
	}
	for _, tc := range []struct {
		name    string
		disk    func(t *testing.T) string
		want    error
		says    []string
		unblock Options
	}{
		{"hibernated", func(t *testing.T) string { img := ntfs(t); fstest.Hibernate(t, img, "hibr"); return loopDev(t, img) },
			usedmap.ErrHibernated, []string{"hibernated", "shutdown /s /f /t 0", "--raw"}, Options{Raw: true}},
		{"bitlocker", func(t *testing.T) string { img := ntfs(t); fstest.BitLocker(t, img); return loopDev(t, img) },
			usedmap.ErrBitLocker, []string{"BitLocker", "manage-bde -off", "--raw"}, Options{Raw: true}},
		{"mounted", func(t *testing.T) string {
			needs.Tool(t, "mount", "umount")
			dev, _ := ext4Disk(t, 32<<20, 8, 64<<10)
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-o", "rw", dev, mnt).CombinedOutput(); err != nil {
				t.Fatalf("mount %s: %v: %s", dev, err, out)
			}
			t.Cleanup(func() {
				if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
					t.Errorf("umount %s: %v: %s", mnt, err, out)
				}
			})
			return dev
		}, ErrMounted, []string{"mounted read-write", mntHint, "--force"}, Options{Force: true, Raw: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := tc.disk(t)
			// A mounted ext4 writes its own superblock and journal: the
			// device stays the same only while nothing mounts it.
			mounted := errors.Is(tc.want, ErrMounted)
			var before string
			if !mounted {
				before = fstest.SHA256(t, disk)
			}
			_, err := s.config(disk, "golden").Run(context.Background(), testlog.New(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run on a %s disk = %v, want %v", tc.name, err, tc.want)
			}
			for _, w := range tc.says {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the refusal %q does not say %q", err, w)
				}
			}
			if n := len(s.caps.List()); n != 0 {
				t.Errorf("the server has %d captures after a refusal, want none: refuse before asking it", n)
			}
			src, err := Open(disk, tc.unblock, nil)
			if err != nil {
				t.Fatalf("Open(%s, %+v) = %v, want it taken", disk, tc.unblock, err)
			}
			src.Close()
			if !mounted {
				if after := fstest.SHA256(t, disk); after != before {
					t.Errorf("the golden disk changed: sha256 %s, before %s", after, before)
				}
			}
		})
	}
}

const mntHint = "mount -o remount,ro"

// cutOnce is a listener whose connections together carry at most cutAt
// bytes from the uploader before the one crossing it is cut (both
// ways), once; it counts every byte the uploader sends through it.
type cutOnce struct {
	net.Listener
	cutAt int64
	sent  atomic.Int64 // uploader → server, all connections
	cut   atomic.Bool
	after atomic.Int64 // uploader → server after the cut
}

func (c *cutOnce) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: conn, l: c}, nil
}

type cutConn struct {
	net.Conn
	l *cutOnce
}

func (c *cutConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		if c.l.cut.Load() {
			c.l.after.Add(int64(n))
		} else if total := c.l.sent.Add(int64(n)); total >= c.l.cutAt && c.l.cut.CompareAndSwap(false, true) {
			keep := n - int(total-c.l.cutAt)
			c.Conn.Close()
			return keep, nil // the proxy forwards these, then sees the close
		}
	}
	return n, err
}

// proxy forwards every connection of ln to target, both ways, until one
// side closes.
func proxy(ln net.Listener, target string) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				return
			}
			var once sync.Once
			both := func() { once.Do(func() { in.Close(); out.Close() }) }
			go func() { io.Copy(in, out); both() }()
			io.Copy(out, in)
			both()
		}()
	}
}

// TestCaptureResume: the connection is cut when half the stream has
// gone; the uploader asks the server where it is and sends the rest, so
// the server takes in every byte exactly once and the bytes on the wire
// stay about the stream's length (not 1.5 times it). The published image
// is the filesystem: its own checker finds it clean and every file reads
// back. Capturing the same name again publishes NAME-v2 and keeps NAME.
func TestCaptureResume(t *testing.T) {
	dev, v := ext4Disk(t, 96<<20, 48, 1200<<10)
	before := fstest.SHA256(t, dev)
	src, err := Open(dev, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	total := src.Total()
	src.Close()
	cut := &cutOnce{cutAt: total / 2}
	s := newTestServer(t, t.TempDir(), func(ln net.Listener) net.Listener { cut.Listener = ln; return cut })

	cfg := s.config(dev, "lab")
	var resumes atomic.Int64
	cfg.Progress = func(p Progress) {
		if n := int64(p.Resumes); n > resumes.Load() {
			resumes.Store(n)
		}
	}
	res, err := cfg.Run(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatalf("capture through a connection cut at 50%%: %v", err)
	}
	if !cut.cut.Load() {
		t.Fatalf("the connection was never cut (%d bytes sent, cut at %d)", cut.sent.Load(), cut.cutAt)
	}
	st := res.State
	t.Logf("stream %d bytes; the server took in %d; uploader sent %d bytes on the wire (%d after the cut), resumed %d×",
		st.Total, st.BytesIn, cut.sent.Load()+cut.after.Load(), cut.after.Load(), resumes.Load())
	if st.State != protocol.CapturePublished || st.Image != "lab" || st.Total != total {
		t.Errorf("capture state %+v, want lab published with %d bytes", st, total)
	}
	if st.BytesIn != st.Total {
		t.Errorf("the server took in %d bytes for a %d-byte stream, want each byte once", st.BytesIn, st.Total)
	}
	if resumes.Load() < 1 {
		t.Errorf("the uploader reports %d resumes, want at least one", resumes.Load())
	}
	// Not sent twice: on the wire, the stream plus requests and what was
	// in flight when the cut came (socket buffers), not half again.
	if wire := cut.sent.Load() + cut.after.Load(); wire > total+total/20+(4<<20) {
		t.Errorf("%d bytes on the wire for a %d-byte stream: the first half was sent again?", wire, total)
	}
	if after := cut.after.Load(); after > total-total/2+total/20+(4<<20) {
		t.Errorf("%d bytes sent after the cut at %d of %d: the upload started over?", after, total/2, total)
	}
	im, ok := s.cat.Get("lab")
	if !ok {
		t.Fatalf("lab is not in the catalog: %v", s.cat.Names())
	}
	if sha := fstest.SHA256(t, dev); sha != before {
		t.Errorf("the golden disk changed: sha256 %s, before %s", sha, before)
	}
	// The published part file is the filesystem, sparse where it is free.
	v.Check(t, im.Source[0])
	if f := im.Image.Files[0]; f.Part.Filesystem != "ext4" || len(f.Part.Extents) < 2 || f.Length > total {
		t.Errorf("published part: %s, %d extents, %d bytes; want ext4's used blocks, at most the %d sent", f.Part.Filesystem, len(f.Part.Extents), f.Length, total)
	}

	// Again, same name: a new version; the old one stays.
	res2, err := s.config(dev, "lab").Run(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if res2.State.Image != "lab-v2" {
		t.Errorf("a second capture of lab published %q, want lab-v2", res2.State.Image)
	}
	if got := s.cat.Names(); len(got) != 2 || got[0] != "lab" || got[1] != "lab-v2" {
		t.Errorf("catalog %v, want lab and lab-v2", got)
	}
	// A restarted server publishes both again.
	cat2 := catalog.New(catalog.Config{}, nil)
	if _, err := pxe.OpenCaptures(pxe.CaptureConfig{Dir: s.dir, Catalog: cat2}, testlog.New(t)); err != nil {
		t.Fatal(err)
	}
	if got := cat2.Names(); len(got) != 2 {
		t.Errorf("after a restart the catalog holds %v, want lab and lab-v2", got)
	}
	// Deleting a captured image deletes its files: it stays gone.
	req, _ := http.NewRequest("DELETE", s.url+"/api/images/lab-v2", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE /api/images/lab-v2: %s", resp.Status)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "images", "lab-v2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("files of the deleted image lab-v2: %v, want them gone", err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "images", "lab", "image.torrent")); err != nil {
		t.Errorf("lab lost its files when lab-v2 was deleted: %v", err)
	}
}

// TestCaptureNoSpace: a server whose capture folder (a 16 MiB tmpfs)
// cannot hold the disk's used bytes refuses the manifest with how much
// it needs and has, before a byte of data is sent; nothing stays staged.
func TestCaptureNoSpace(t *testing.T) {
	needs.Root(t, "mount")
	needs.Tool(t, "mount", "umount")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	dev, _ := ext4Disk(t, 96<<20, 48, 1200<<10) // about 25 MiB used
	var sent atomic.Int64
	s := newTestServer(t, dir, func(ln net.Listener) net.Listener { return &counting{Listener: ln, n: &sent} })
	_, err := s.config(dev, "big").Run(context.Background(), testlog.New(t))
	if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "507") || !strings.Contains(err.Error(), "free") {
		t.Fatalf("capture onto a full server = %v, want a 507 that says what is free", err)
	}
	t.Logf("refused: %v", err)
	sts := s.caps.List()
	if len(sts) != 1 || sts[0].State != protocol.CaptureFailed || sts[0].BytesIn != 0 || sts[0].Received != 0 {
		t.Errorf("captures %+v, want one failed with no data received", sts)
	}
	if sent.Load() > 1<<20 {
		t.Errorf("the uploader sent %d bytes to a server without room, want only the calls and the manifest", sent.Load())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "staging", "*")); len(left) != 0 {
		t.Errorf("staging left after a refusal: %v", left)
	}
}

// counting counts the bytes its connections read.
type counting struct {
	net.Listener
	n *atomic.Int64
}

func (c *counting) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, n: c.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// TestCaptureForged: only the capture's own secret, while the capture is
// open, moves it: no secret, a wrong one, another capture's, and the
// right one after the image was published are refused, as are data at
// another offset, data past the end, a second manifest, and starting a
// capture without the admin token.
func TestCaptureForged(t *testing.T) {
	dev, _ := ext4Disk(t, 32<<20, 8, 256<<10)
	s := newTestServer(t, t.TempDir(), nil)
	src, err := Open(dev, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	a, b := &Client{Server: s.url}, &Client{Server: s.url}
	if _, err := a.Create(ctx, "wrong-token-0123456789", protocol.NewCapture{Name: "x"}); !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "401") {
		t.Errorf("create with a wrong admin token = %v, want 401", err)
	}
	if _, err := a.Create(ctx, testToken, protocol.NewCapture{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, testToken, protocol.NewCapture{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	manifest, _ := json.Marshal(src.Manifest)
	put := func(secret, path string, body []byte, hdr map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest("PUT", s.url+"/api/captures/"+a.ID+path, bytes.NewReader(body))
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct{ name, secret string }{{"no secret", ""}, {"wrong secret", strings.Repeat("0", 48)}, {"the other capture's", b.Secret}, {"the admin token", testToken}} {
		if code := put(tc.secret, "/manifest", manifest, nil); code != http.StatusUnauthorized {
			t.Errorf("manifest with %s: %d, want 401", tc.name, code)
		}
		if code := put(tc.secret, "/data", []byte("forged"), map[string]string{protocol.UploadOffsetHeader: "0"}); code != http.StatusUnauthorized {
			t.Errorf("data with %s: %d, want 401", tc.name, code)
		}
	}
	if _, err := a.SendManifest(ctx, &src.Manifest); err != nil {
		t.Fatal(err)
	}
	other := src.Manifest
	other.DiskSize++
	if _, err := a.SendManifest(ctx, &other); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("a second, other manifest = %v, want 409", err)
	}
	if code := put(a.Secret, "/data", []byte("x"), map[string]string{protocol.UploadOffsetHeader: "5"}); code != http.StatusConflict {
		t.Errorf("data at the wrong offset: %d, want 409", code)
	}
	if code := put(a.Secret, "/data", make([]byte, src.Total()+1), map[string]string{protocol.UploadOffsetHeader: "0"}); code != http.StatusRequestEntityTooLarge {
		t.Errorf("data past the stream's end: %d, want 413", code)
	}
	// The 413 kept the bytes up to the stream's end: a whole stream of
	// zeros. The server reads the used map from what it received, finds
	// no ext4 there, and refuses to publish.
	if _, err := a.Finish(ctx); err == nil || !strings.Contains(err.Error(), "inconsistent upload") {
		t.Errorf("finish of a stream of forged zeros = %v, want it failed as an inconsistent upload", err)
	}
	if _, ok := s.cat.Get("a"); ok {
		t.Errorf("the forged capture was published")
	}

	// A good capture, then its secret replayed after publish.
	g := &Client{Server: s.url, Backoff: 50 * time.Millisecond}
	if _, err := g.Create(ctx, testToken, protocol.NewCapture{Name: "good"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.SendManifest(ctx, &src.Manifest); err != nil {
		t.Fatal(err)
	}
	if err := g.Upload(ctx, src, src.Total()); err != nil {
		t.Fatal(err)
	}
	if st, err := g.Finish(ctx); err != nil || st.State != protocol.CapturePublished || st.Image != "good" {
		t.Fatalf("good capture: %+v, %v", st, err)
	}
	a.ID = g.ID
	if code := put(g.Secret, "/manifest", manifest, nil); code != http.StatusConflict {
		t.Errorf("manifest with a spent secret after publish: %d, want 409", code)
	}
	if code := put(g.Secret, "/data", []byte("x"), map[string]string{protocol.UploadOffsetHeader: fmt.Sprint(src.Total())}); code != http.StatusConflict {
		t.Errorf("data with a spent secret after publish: %d, want 409", code)
	}
	if _, err := g.Finish(ctx); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("finish again with a spent secret = %v, want 409", err)
	}
}

// TestCaptureGPT: a GPT disk (made by sfdisk) with an ESP (FAT16) and an
// ext4 partition is captured part by part: the published image's layout
// is the disk's table (numbers, starts, sizes, types, names), each part
// ships only its used blocks, and each published part file is its
// filesystem, clean with every file.
func TestCaptureGPT(t *testing.T) {
	needs.Tool(t, "sfdisk")
	const mib = 1 << 20
	disk := fstest.RandomFile(t, "disk.img", 100*mib, 11)
	script := "label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"\nstart=67584, size=131072, type=0FC63DAF-8483-4772-8E79-3D69E4A4D134, name=\"root\"\n"
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", disk)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	esp := fstest.RandomFile(t, "esp.img", 32*mib, 12)
	vESP := fstest.MakeFAT(t, esp, fstest.NewFiles(t, 16, 600<<10), "-F", "16")
	root := fstest.RandomFile(t, "root.img", 64*mib, 13)
	vRoot := fstest.MakeExt(t, root, fstest.NewFiles(t, 24, 900<<10), "-t", "ext4")
	d, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		src string
		off int64
	}{{esp, 2048 * 512}, {root, 67584 * 512}} {
		b, err := os.ReadFile(p.src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteAt(b, p.off); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	dev := loopDev(t, disk)
	before := fstest.SHA256(t, dev)

	s := newTestServer(t, t.TempDir(), nil)
	res, err := s.config(dev, "dual").Run(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	im, ok := s.cat.Get(res.State.Image)
	if !ok {
		t.Fatalf("%s is not in the catalog", res.State.Image)
	}
	l := im.Image.Layout
	if l.Table != "gpt" || len(l.Parts) != 2 {
		t.Fatalf("layout %+v, want a GPT with two parts", l)
	}
	for i, want := range []struct {
		number      int
		start, size int64
		typ, label  string
		fs          string
	}{{1, 2048 * 512, 32 * mib, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ESP", "fat16"}, {2, 67584 * 512, 64 * mib, "0FC63DAF-8483-4772-8E79-3D69E4A4D134", "root", "ext4"}} {
		p := l.Parts[i]
		if p.Number != want.number || p.Start != want.start || p.Size != want.size || !strings.EqualFold(p.Type, want.typ) || p.Label != want.label || p.Filesystem != want.fs || len(p.Extents) < 2 {
			t.Errorf("part %d: %+v (%d extents), want number %d at %d, %d bytes, type %s, name %s, %s used blocks",
				i, p, len(p.Extents), want.number, want.start, want.size, want.typ, want.label, want.fs)
		}
	}
	vESP.Check(t, im.Source[0])
	vRoot.Check(t, im.Source[1])
	if after := fstest.SHA256(t, dev); after != before {
		t.Errorf("the golden disk changed: sha256 %s, before %s", after, before)
	}
	t.Logf("sent %d bytes of a %d-byte disk; image %s, %d bytes", res.Used, res.Size, im.Name, im.Image.Length)
}
