package pxe

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	uploader "github.com/pxeswarm/pxeswarm/capture"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
)

// uploadWriter adapts an Upload to io.Writer for io.Copy.
type uploadWriter struct{ up *Upload }

func (w uploadWriter) Write(b []byte) (int, error) { return w.up.Write(b) }

// send writes n bytes of src's stream from off through a data upload.
func send(t *testing.T, cs *Captures, id, secret string, src io.ReaderAt, off, n int64) {
	t.Helper()
	up, err := cs.Begin(id, secret, off)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(uploadWriter{up}, io.NewSectionReader(src, off, n)); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCapturesRestart: a server that stops half-way through a capture
// resumes it from the offset it synced, takes the rest and publishes an
// image whose filesystem checks clean with every file (made from an
// ext4 image file: no root needed).
func TestCapturesRestart(t *testing.T) {
	img := fstest.RandomFile(t, "golden.img", 64<<20, 3)
	v := fstest.MakeExt(t, img, fstest.NewFiles(t, 24, 800<<10), "-t", "ext4")
	src, err := uploader.Open(img, uploader.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dir := t.TempDir()
	log := testlog.New(t)
	cs, err := OpenCaptures(CaptureConfig{Dir: dir, Catalog: catalog.New(catalog.Config{}, nil), Margin: 1 << 20, SyncEvery: 1 << 20}, log)
	if err != nil {
		t.Fatal(err)
	}
	created, err := cs.Create(protocol.NewCapture{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Manifest(created.ID, created.Secret, &src.Manifest); err != nil {
		t.Fatal(err)
	}
	half := src.Total() / 2
	send(t, cs, created.ID, created.Secret, src, 0, half)

	// The server stops and starts again over the same folder.
	cat := catalog.New(catalog.Config{}, nil)
	cs2, err := OpenCaptures(CaptureConfig{Dir: dir, Catalog: cat, Margin: 1 << 20}, log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cs2.State(created.ID)
	if err != nil || st.State != protocol.CaptureReceiving || st.Received != half {
		t.Fatalf("after a restart: %+v, %v; want receiving at %d", st, err, half)
	}
	if _, err := cs2.Begin(created.ID, created.Secret, 0); !errors.Is(err, ErrCaptureOffset) {
		t.Errorf("data from 0 after the restart = %v, want ErrCaptureOffset", err)
	}
	send(t, cs2, created.ID, created.Secret, src, half, src.Total()-half)
	if _, err := cs2.Finish(created.ID, created.Secret); err != nil {
		t.Fatal(err)
	}
	cs2.Wait()
	st, _ = cs2.State(created.ID)
	if st.State != protocol.CapturePublished || st.Image != "lab" {
		t.Fatalf("capture %+v, want lab published", st)
	}
	im, ok := cat.Get("lab")
	if !ok {
		t.Fatal("lab is not in the catalog")
	}
	v.Check(t, im.Source[0])
}

// TestCapturesRefuse: a manifest that lies about the used blocks (an
// extent left out) is caught when the server reads the used map from
// what it received: the capture fails, nothing is published and nothing
// stays on disk. A server without the room refuses the manifest before
// any data.
func TestCapturesRefuse(t *testing.T) {
	img := fstest.RandomFile(t, "golden.img", 32<<20, 4)
	fstest.MakeExt(t, img, fstest.NewFiles(t, 16, 600<<10), "-t", "ext4")
	src, err := uploader.Open(img, uploader.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dir := t.TempDir()
	cat := catalog.New(catalog.Config{}, nil)
	cs, err := OpenCaptures(CaptureConfig{Dir: dir, Catalog: cat, Margin: 1 << 20}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}

	// The lie: the last extent is not sent.
	liar := src.Manifest
	liar.Parts = append([]protocol.CapturePart(nil), src.Manifest.Parts...)
	es := liar.Parts[0].Extents
	if len(es) < 2 {
		t.Fatalf("the ext4 image has %d extents, want a few", len(es))
	}
	liar.Parts[0].Extents = es[:len(es)-1]
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stream []byte
	for _, e := range liar.Parts[0].Extents {
		b := make([]byte, e[1])
		if _, err := f.ReadAt(b, e[0]); err != nil {
			t.Fatal(err)
		}
		stream = append(stream, b...)
	}
	c, err := cs.Create(protocol.NewCapture{Name: "liar"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Manifest(c.ID, c.Secret, &liar); err != nil {
		t.Fatal(err)
	}
	send(t, cs, c.ID, c.Secret, bytesReaderAt(stream), 0, int64(len(stream)))
	if _, err := cs.Finish(c.ID, c.Secret); err != nil {
		t.Fatal(err)
	}
	cs.Wait()
	st, _ := cs.State(c.ID)
	if st.State != protocol.CaptureFailed || !strings.Contains(st.Error, "inconsistent upload") {
		t.Errorf("a capture that left out used blocks: %+v, want failed as an inconsistent upload", st)
	}
	if _, ok := cat.Get("liar"); ok {
		t.Error("the lying capture was published")
	}
	for _, sub := range []string{"staging", "images"} {
		if left, _ := filepath.Glob(filepath.Join(dir, sub, "*")); len(left) != 0 {
			t.Errorf("files left after a failed capture: %v", left)
		}
	}

	// No room: the whole free space plus a byte as margin.
	full, err := OpenCaptures(CaptureConfig{Dir: t.TempDir(), Catalog: cat, Margin: 1 << 62}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err = full.Create(protocol.NewCapture{Name: "big"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := full.Manifest(c.ID, c.Secret, &src.Manifest); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "free") {
		t.Errorf("manifest on a server without room = %v, want ErrNoSpace saying what is free", err)
	}
	if _, err := full.Begin(c.ID, c.Secret, 0); !errors.Is(err, ErrCaptureState) {
		t.Errorf("data after the refusal = %v, want ErrCaptureState (the capture failed)", err)
	}
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestCapturesExpire: an open capture that receives nothing for Expire
// fails and its staging goes; its secret is spent; a while later it is
// forgotten.
func TestCapturesExpire(t *testing.T) {
	dir := t.TempDir()
	cs, err := OpenCaptures(CaptureConfig{Dir: dir, Catalog: catalog.New(catalog.Config{}, nil), Expire: 50 * time.Millisecond}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cs.Create(protocol.NewCapture{Name: "idle"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Authorize(c.ID, c.Secret); err != nil {
		t.Fatalf("a fresh capture refuses its secret: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	sts := cs.List()
	if len(sts) != 1 || sts[0].State != protocol.CaptureFailed || !strings.Contains(sts[0].Error, "expired") {
		t.Fatalf("an idle capture after its expiry: %+v, want failed, expired", sts)
	}
	if _, err := os.Stat(filepath.Join(dir, "staging", c.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging of an expired capture: %v, want it gone", err)
	}
	if err := cs.Authorize(c.ID, c.Secret); !errors.Is(err, ErrCaptureState) {
		t.Errorf("the secret of an expired capture = %v, want ErrCaptureState", err)
	}
	time.Sleep(100 * time.Millisecond)
	if sts := cs.List(); len(sts) != 0 {
		t.Errorf("a capture that failed long ago is still listed: %+v", sts)
	}
}
