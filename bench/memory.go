package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// The memory figure of issue 20: peak RSS of a seeding and of a fetching
// `pxeswarm` process for a large image (256 GiB) at the default piece
// size. The image is a sparse file of zeros and its torrent comes from
// imager.ZeroImage: the info dictionary `pxeswarm mktorrent --raw` makes
// of that file (same layout, same piece size, same info-hash), with each
// distinct piece hashed once instead of reading 256 GiB. The seeder runs
// `pxeswarm seed` on the sparse file (a trusted seed: it reads nothing at
// start); the fetcher runs `pxeswarm fetch --check fresh` onto a second
// sparse file, capped at --memory-rate so the run writes a bounded amount
// to the disk, both on loopback. The fetcher starts first and waits for
// its peer, so its RSS right after the torrent is loaded is taken before
// any data flows; the seeder's is taken as it joins, before the fetcher's
// next dial (every 5 s). Peaks are the kernel's VmHWM (/proc/PID/status)
// read just before each process is stopped. Not getrusage's ru_maxrss from
// wait4: Go starts a child with vfork semantics (CLONE_VM), and exec keeps
// the high-water RSS of the mm it leaves, the parent's, so a child's
// ru_maxrss is at least this bench's own peak (280 MiB once it had read an
// initramfs). Both run with GODEBUG=gctrace=1, whose lines tell how much
// of that is Go heap.

type memCost struct {
	size, piece  int64
	pieces       int
	torrentBytes int
	rate         int64 // the fetcher's download cap, bytes/s
	ran          time.Duration

	seed, fetch procMem
	fetched     int64 // bytes the fetcher wrote (wchar)
	initramfs   int64 // unpacked initramfs bytes (0: not measured)
}

// peak is the process's peak RSS: the kernel keeps VmHWM lazily (it is
// raised when pages are unmapped, not at every fault), so a VmRSS sample
// can top it.
func (m procMem) peak() int64 { return max(m.loaded, m.sampled, m.hwm) }

// procMem is one process's memory figures, in bytes.
type procMem struct {
	loaded  int64 // VmRSS right after the torrent is loaded
	sampled int64 // highest VmRSS seen while sampling
	hwm     int64 // VmHWM before it was stopped
	// RssAnon and RssFile before it was stopped: the heap and runtime,
	// and the binary's pages.
	anon, file int64
	// From the Go runtime's GC trace (GODEBUG=gctrace=1): the largest
	// heap at any collection, and the largest live heap after one.
	heapPeak, heapLive int64
}

// memGoal is issue 20's goal for a fetching process.
const memGoal = 256 << 20

// agentRAM is the smallest terminal the agent must fit (issue 20).
const agentRAM = 1 << 30

func measureMemory(bin, work string, size int64, dur time.Duration, rate int64, initramfs string) (*memCost, error) {
	if rate <= 0 || dur <= 0 {
		return nil, fmt.Errorf("memory figure: want a positive --memory-rate and --memory-for (the fetch writes rate × time to the disk)")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(work, &st); err != nil {
		return nil, err
	}
	need := rate*int64(dur/time.Second+10) + (1 << 30)
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return nil, fmt.Errorf("memory figure: %s has %s free, the fetch writes up to %s: free some space or lower --memory-rate or --memory-for",
			work, bytesize.Format(free), bytesize.Format(need))
	}
	dir, err := os.MkdirTemp(work, "memory")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src, target, tor := filepath.Join(dir, "disk.img"), filepath.Join(dir, "target.img"), filepath.Join(dir, "disk.torrent")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(src, size); err != nil {
		return nil, fmt.Errorf("memory figure: make the %s sparse image: %w", bytesize.Format(size), err)
	}
	im, err := imager.ZeroImage("disk.img", size, 0)
	if err != nil {
		return nil, err
	}
	if err := im.WriteFile(tor); err != nil {
		return nil, err
	}
	fi, err := os.Stat(tor)
	if err != nil {
		return nil, err
	}
	mc := &memCost{size: size, piece: im.PieceLength, pieces: im.NumPieces(), torrentBytes: int(fi.Size()), rate: rate}
	if initramfs != "" {
		if mc.initramfs, err = unpackedSize(initramfs); err != nil {
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	seedAddr := fmt.Sprintf("127.0.0.1:%d", port)

	fetch, err := startLogged(dir, "fetch", bin, "fetch", "--torrent", tor, "--target", target, "--check", "fresh",
		"--listen", "127.0.0.1:0", "--peer", seedAddr, "--download-limit", strconv.FormatInt(rate, 10))
	if err != nil {
		return nil, err
	}
	defer fetch.stop()
	if err := fetch.waitFor("joined swarm", 60*time.Second); err != nil {
		return nil, err
	}
	mc.fetch.loaded = fetch.status("VmRSS")
	seed, err := startLogged(dir, "seed", bin, "seed", "--torrent", tor, "--source", src, "--listen", seedAddr)
	if err != nil {
		return nil, err
	}
	defer seed.stop()
	if err := seed.waitFor("joined swarm", 60*time.Second); err != nil {
		return nil, err
	}
	mc.seed.loaded = seed.status("VmRSS")
	// The fetcher dials its peer again every 5 s: the run starts once it
	// has written its first MiB.
	for t0 := time.Now(); procIO(fetch.cmd.Process.Pid, "wchar") < 1<<20; time.Sleep(50 * time.Millisecond) {
		if time.Since(t0) > 30*time.Second || fetch.exited() || seed.exited() {
			return nil, fmt.Errorf("memory figure: no data flowed within 30 s of the seeder's start: %s\n%s", fetch.tail(), seed.tail())
		}
	}

	t0 := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for i := 0; time.Since(t0) < dur && i < int(dur/(250*time.Millisecond))+8; i++ {
		<-tick.C
		for _, p := range []*logged{seed, fetch} {
			if p.exited() {
				return nil, fmt.Errorf("memory figure: %s exited during the run: %s", p.name, p.tail())
			}
		}
		mc.seed.sampled = max(mc.seed.sampled, seed.status("VmRSS"))
		mc.fetch.sampled = max(mc.fetch.sampled, fetch.status("VmRSS"))
	}
	mc.ran = time.Since(t0)
	mc.fetched = procIO(fetch.cmd.Process.Pid, "wchar")
	for _, x := range []struct {
		p *logged
		m *procMem
	}{{fetch, &mc.fetch}, {seed, &mc.seed}} {
		x.m.hwm, x.m.anon, x.m.file = x.p.status("VmHWM"), x.p.status("RssAnon"), x.p.status("RssFile")
		if err := x.p.stop(); err != nil {
			return nil, err
		}
		x.m.heapPeak, x.m.heapLive = x.p.gcHeap()
	}
	// Well under the cap is what the machine can do (loopback on busy
	// cores); the text gives the rate reached. Next to nothing is a
	// stalled fetch, whose peak would mean little.
	if mc.fetched < rate*int64(dur/time.Second)/20 {
		return nil, fmt.Errorf("memory figure: the fetch wrote only %s in %s (cap %s/s): it did not run at speed; see %s",
			bytesize.Format(mc.fetched), mc.ran.Round(time.Second), bytesize.Format(rate), fetch.tail())
	}
	return mc, nil
}

// logged is a child process whose output goes to a file.
type logged struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
}

func startLogged(dir, name, bin string, args ...string) (*logged, error) {
	p := &logged{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *logged) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor waits until the process's output holds s.
func (p *logged) waitFor(s string, limit time.Duration) error {
	for t0 := time.Now(); time.Since(t0) < limit; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, []byte(s)) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("memory figure: %s exited before %q: %s", p.name, s, p.tail())
		}
	}
	return fmt.Errorf("memory figure: %s did not say %q within %s: %s", p.name, s, limit, p.tail())
}

// stop ends the process with SIGTERM (SIGKILL after 20 s) and waits.
func (p *logged) stop() error {
	if p.exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("memory figure: %s did not stop within 20 s of SIGTERM: %s", p.name, p.tail())
	}
	return nil
}

// gcRe matches the heap sizes of a gctrace line: "4->5->2 MB" (at the
// start of the collection, at its end, live after it; MiB).
var gcRe = regexp.MustCompile(`(\d+)->(\d+)->(\d+) MB`)

// gcHeap is the largest heap and the largest live heap in the process's
// GC trace, in bytes.
func (p *logged) gcHeap() (peak, live int64) {
	b, _ := os.ReadFile(p.log)
	for _, m := range gcRe.FindAllSubmatch(b, -1) {
		a, _ := strconv.ParseInt(string(m[1]), 10, 64)
		e, _ := strconv.ParseInt(string(m[2]), 10, 64)
		l, _ := strconv.ParseInt(string(m[3]), 10, 64)
		peak, live = max(peak, a<<20, e<<20), max(live, l<<20)
	}
	return peak, live
}

// tail is the last lines of the process's output, for errors.
func (p *logged) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// status is a kB field of /proc/PID/status, in bytes (0 once gone).
func (p *logged) status(field string) int64 {
	if p.exited() {
		return 0
	}
	return procField(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid), field+":") << 10
}

// procIO is a field of /proc/PID/io.
func procIO(pid int, field string) int64 {
	return procField(fmt.Sprintf("/proc/%d/io", pid), field+":")
}

// procField is the first number after key at a line's start in file.
func procField(file, key string) int64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// freePort is a TCP port free on loopback now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (mc *memCost) markdown() string {
	var b strings.Builder
	link := ""
	if mc.rate == defaultMemRate {
		link = " (about the payload of a 1 Gbit/s link, the terminals')"
	}
	fmt.Fprintf(&b, `
## Memory

Peak RSS of a seeding and of a fetching `+"`pxeswarm`"+` process for a %s
image at the default piece size: %d pieces of %s (a %s torrent). The image
is a sparse file of zeros; its torrent is the one `+"`pxeswarm mktorrent --raw`"+`
makes of it (imager.ZeroImage: the same info dictionary and info-hash, each
distinct piece hashed once instead of reading %s; a test checks it against
mktorrent's on small files). `+"`pxeswarm seed`"+` serves the sparse file (a
trusted seed reads nothing at start); `+"`pxeswarm fetch --check fresh`"+`
writes onto another sparse file, capped at %s/s%s:
it fetched %s in %.0f s from its first MiB on (%s/s), on loopback. After load: VmRSS once the
torrent is loaded, before any data flows. Sampled: the highest VmRSS, read
every 250 ms. VmHWM: the kernel's high-water mark just before SIGTERM (kept
lazily: a sample can top it). The peak is the larger. Go heap: the largest heap at a
collection and the largest live heap after one, from the runtime's GC trace
(GODEBUG=gctrace=1).

| process | after load | sampled | VmHWM | peak | Go heap: peak / live |
| --- | ---: | ---: | ---: | ---: | ---: |
| seed | %s | %s | %s | %s | %s / %s |
| fetch | %s | %s | %s | **%s** | %s / %s |
`, bytesize.Format(mc.size), mc.pieces, bytesize.Format(mc.piece), bytesize.Format(int64(mc.torrentBytes)), bytesize.Format(mc.size),
		bytesize.Format(mc.rate), link, bytesize.Format(mc.fetched), mc.ran.Seconds(), bytesize.Format(int64(float64(mc.fetched)/mc.ran.Seconds())),
		mib(mc.seed.loaded), mib(mc.seed.sampled), mib(mc.seed.hwm), mib(mc.seed.peak()), mib(mc.seed.heapPeak), mib(mc.seed.heapLive),
		mib(mc.fetch.loaded), mib(mc.fetch.sampled), mib(mc.fetch.hwm), mib(mc.fetch.peak()), mib(mc.fetch.heapPeak), mib(mc.fetch.heapLive))
	fmt.Fprintf(&b, "\nAt the end, the fetcher's RSS was %s anonymous (Go heap, stacks, runtime) and %s file-backed (the binary's pages); the seeder's %s and %s.\n",
		mib(mc.fetch.anon), mib(mc.fetch.file), mib(mc.seed.anon), mib(mc.seed.file))
	peak := mc.fetch.peak()
	if peak <= memGoal {
		fmt.Fprintf(&b, "\nThe fetcher's peak, %s, meets issue 20's goal (≤ 256 MiB).", mib(peak))
	} else {
		fmt.Fprintf(&b, "\nThe fetcher's peak, %s, **misses** issue 20's goal (≤ 256 MiB).", mib(peak))
	}
	if mc.initramfs > 0 {
		// The agent's own binary lives in the tmpfs: its file-backed
		// pages are counted twice here, which errs on the safe side.
		left := int64(agentRAM) - mc.initramfs - peak
		fmt.Fprintf(&b, " On a terminal, the agent runs the same imager from the initramfs, which stays unpacked in RAM (tmpfs): %s. Initramfs and fetcher peak together are %s of 1 GiB (the binary's pages counted twice), leaving %s for the kernel and the page cache of the writes (reclaimable)",
			mib(mc.initramfs), mib(mc.initramfs+peak), mib(left))
		if left < 256<<20 {
			b.WriteString(": **too tight for a 1 GiB terminal**.")
		} else {
			b.WriteString(": a 1 GiB terminal fits.")
		}
	}
	b.WriteString("\n")
	return b.String()
}

// unpackedSize is what an initramfs (a newc cpio archive, gzip or xz
// compressed or not) takes unpacked in a tmpfs: its regular files' bytes,
// each rounded up to a 4 KiB page.
func unpackedSize(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	var r io.Reader = bytes.NewReader(data)
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		if r, err = gzip.NewReader(r); err != nil {
			return 0, fmt.Errorf("initramfs %s: %w", path, err)
		}
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		if r, err = xz.NewReader(r); err != nil {
			return 0, fmt.Errorf("initramfs %s: %w", path, err)
		}
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return 0, fmt.Errorf("initramfs %s: decompress: %w", path, err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		return 0, fmt.Errorf("initramfs %s: not a newc cpio archive: %w", path, err)
	}
	var n int64
	for _, rec := range recs {
		if rec.Mode&cpio.S_IFMT == cpio.S_IFREG {
			n += int64((rec.FileSize + 4095) &^ 4095)
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("initramfs %s: no files in it", path)
	}
	return n, nil
}
