package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/testnet"
)

// bin is the pxeswarm binary built once for the process-level tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pxeswarm-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "pxeswarm")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a pxeswarm process whose output is kept for the test.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); pw.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of pxeswarm %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait waits for the process to exit, at most d.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		time.Sleep(10 * time.Millisecond) // let the scanner drain
		return p.err
	case <-time.After(d):
		t.Fatalf("pxeswarm %s did not finish within %s", strings.Join(p.cmd.Args[1:], " "), d)
		return nil
	}
}

// waitFor waits until the output matches re.
func (p *proc) waitFor(t *testing.T, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m
		}
		select {
		case <-p.done:
			if m := re.FindStringSubmatch(p.output()); m != nil {
				return m
			}
			t.Fatalf("pxeswarm exited (%v) before printing %q", p.err, re)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q within %s", re, d)
	return nil
}

var receivedRe = regexp.MustCompile(`fetch finished.* received_bytes=(\d+)`)

func (p *proc) received(t *testing.T) int64 {
	t.Helper()
	m := receivedRe.FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no received_bytes in output")
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	p := start(t, args...)
	err := p.wait(t, 2*time.Minute)
	return p.output(), err
}

// loopbackIPs hands every peer process its own loopback address
// (127.1.0.0/16 all reaches lo), as on a LAN where each machine has one.
// anacrolix bans misbehaving peers by IP, so peers sharing 127.0.0.1 would
// be banned together.
var nextIP atomic.Int32

func peerListen() string {
	n := nextIP.Add(1)
	return fmt.Sprintf("127.1.%d.%d:0", n/250, n%250+1)
}

func writeRandom(t *testing.T, path string, n int64, seed uint64) {
	t.Helper()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, r, n); err != nil {
		t.Fatal(err)
	}
}

func fileSHA1(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha1.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// image is a multi-part test image with its torrent, served by a seeder
// that also runs the tracker.
type image struct {
	dir      string
	parts    []string
	sums     []string
	torrent  string
	announce string
	im       *imager.Image
	// seeders are the peer addresses of the seeders started (seed), which
	// fetchArgs gives every fetch as --peer besides the tracker: a fetch
	// whose announces fail waits a minute between them (anacrolix), and
	// twice in CI a fetch then had no peer for its whole run. Tests of
	// the tracker itself start fetches without it.
	seeders []string
}

func makeImage(t *testing.T, sizes []int64, piece string) *image {
	t.Helper()
	img := &image{dir: t.TempDir()}
	for i, sz := range sizes {
		p := filepath.Join(img.dir, fmt.Sprintf("src%d.img", i+1))
		writeRandom(t, p, sz, uint64(i+1))
		img.parts = append(img.parts, p)
		img.sums = append(img.sums, fileSHA1(t, p))
	}
	img.announce = fmt.Sprintf("http://127.0.0.1:%d/announce", testnet.FreePort(t))
	img.torrent = filepath.Join(img.dir, "image.torrent")
	args := []string{"mktorrent", "--piece-size", piece, "--tracker", img.announce, "--table", "gpt", "-o", img.torrent}
	if out, err := run(t, append(args, img.parts...)...); err != nil {
		t.Fatalf("mktorrent: %v\n%s", err, out)
	}
	var err error
	if img.im, err = imager.LoadFile(img.torrent); err != nil {
		t.Fatal(err)
	}
	return img
}

// seed starts a seeder of sources; with tracker it also runs the tracker.
func (img *image) seed(t *testing.T, sources []string, tracker bool) *proc {
	t.Helper()
	args := []string{"seed", "--torrent", img.torrent, "--source", strings.Join(sources, ","),
		"--listen", peerListen(), "--interval", "1s", "--progress-every", "1s"}
	if tracker {
		host := strings.TrimSuffix(strings.TrimPrefix(img.announce, "http://"), "/announce")
		args = append(args, "--tracker-listen", host)
	}
	p := start(t, args...)
	img.seeders = append(img.seeders, p.waitFor(t, regexp.MustCompile(`joined swarm.* listen=(\S+)`), 30*time.Second)[1])
	return p
}

func (img *image) targets(dir string, prefix string) []string {
	var ts []string
	for i := range img.parts {
		ts = append(ts, filepath.Join(dir, fmt.Sprintf("%s-p%d.img", prefix, i+1)))
	}
	return ts
}

func (img *image) checkSame(t *testing.T, targets []string) {
	t.Helper()
	for i, tg := range targets {
		if got := fileSHA1(t, tg); got != img.sums[i] {
			t.Errorf("target %s: sha1 %s, want %s (source %s)", tg, got, img.sums[i], img.parts[i])
		}
	}
}

func fetchArgs(img *image, targets []string, extra ...string) []string {
	args := []string{"fetch", "--torrent", img.torrent, "--target", strings.Join(targets, ","),
		"--listen", peerListen(), "--progress-every", "200ms"}
	if !slices.Contains(extra, "--peer") {
		for _, a := range img.seeders {
			args = append(args, "--peer", a)
		}
	}
	return append(args, extra...)
}

// missingBytes hashes targets against the torrent: the bytes in pieces
// that do not match yet.
func missingBytes(t *testing.T, img *image, targets []string) int64 {
	t.Helper()
	var all []byte
	for _, tg := range targets {
		b, err := os.ReadFile(tg)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	var missing int64
	pl := img.im.PieceLength
	for i := 0; i < img.im.NumPieces(); i++ {
		end := min(int64(len(all)), int64(i+1)*pl)
		if sha1.Sum(all[int64(i)*pl:end]) != img.im.PieceHash(i) {
			missing += end - int64(i)*pl
		}
	}
	return missing
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
