package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
	"github.com/pxeswarm/pxeswarm/usedmap"
)

// The capture scenario measures issue 17's goal for `pxeswarm capture
// --disk`: a capture moves about the used bytes over the network
// (≤ 1.05 × used) and finishes at the slower of disk read and link rate.
// The golden disk is a filesystem image (fsimage.go: files written, half
// deleted, larger ones written into the holes) attached read-only as a
// loop device with direct I/O (losetup -r --direct-io=on, so the backing
// file's page cache is not used); `pxeswarm serve` (captures on, no
// image) runs in the lab's server namespace and `pxeswarm capture
// --disk /dev/loopN` in client 1's, over one link shaped to R. Measured,
// side by side in one run:
//
//   - wire: the bytes client 1's link carried out during the capture (its
//     switch port's counter, as the other scenarios count; segmentation
//     offload off on that link, so every frame's headers count), against used, the bytes the filesystem's own
//     tools count as in use (dumpe2fs -h, ntfsinfo -m); and the data bytes
//     the server took in (GET /api/captures, bytes_in);
//   - T_capture: from starting pxeswarm capture to its exit (the image is
//     then published), against used/R (the link floor) and against the
//     read floor: the time to find the used blocks (usedmap.Detect, as
//     capture does) and read them, in order, 1 MiB at a time, from the
//     same loop device, with its buffer cache flushed first (as it is
//     before the capture). That is the least any capture must read; it
//     does no hashing or sending.
//
// Each disk is captured twice: as it is (the host's disk is fast, so
// used/R is the slower floor) and with the loop device's reads throttled
// to a fraction of R (--capture-slow-disk, a blkio cgroup holding the
// read floor's process and the capture's), so the read is the slower one.
type captureResult struct {
	kind              string
	size              int64         // the partition (loop device) size
	used              int64         // the filesystem's own count of bytes in use
	mapUsed           int64         // usedmap's count: what capture reads (files and metadata)
	extents           int           // usedmap's extents
	rate              int64         // link rate, bits/s
	diskRate          int64         // the loop device's reads throttled to this, bytes/s (0: not)
	wire              int64         // bytes client 1's link carried out during the capture
	wireBack          int64         // bytes it carried in (the server's ACKs and answers)
	bytesIn           int64         // data bytes the server took in
	took              time.Duration // T_capture
	read              time.Duration // the read floor
	cpuAvg, cpuPeak   float64
	published, usedBy string
}

func (c captureResult) linkFloor() time.Duration { return floorOf(c.used, c.rate) }

// floor is the slower of the two floors: issue 17's target time.
func (c captureResult) floor() time.Duration { return max(c.linkFloor(), c.read) }

func (c captureResult) wireRatio() float64 { return float64(c.wire) / float64(c.used) }
func (c captureResult) timeRatio() float64 { return c.took.Seconds() / c.floor().Seconds() }

func (c captureResult) disk() string {
	if c.diskRate == 0 {
		return "disk unthrottled"
	}
	return fmt.Sprintf("disk reads at %.1f MB/s", float64(c.diskRate)/1e6)
}

func (c captureResult) line() string {
	return fmt.Sprintf("capture %-5s %s, S=%d MiB, used %.1f MiB (%.1f%%, %s): wire %.3f×used (server took in %.3f×used, ACKs back %.3f×used); "+
		"T_capture %.1fs = %.2f×used/R = %.2f×read (used/R %.1fs, read %.2fs) = %.2f×max; cpu %.0f%% (peak %.0f%%)",
		c.kind, c.disk(), c.size>>20, float64(c.used)/(1<<20), 100*float64(c.used)/float64(c.size), c.usedBy,
		c.wireRatio(), float64(c.bytesIn)/float64(c.used), float64(c.wireBack)/float64(c.used),
		c.took.Seconds(), c.took.Seconds()/c.linkFloor().Seconds(), c.took.Seconds()/c.read.Seconds(),
		c.linkFloor().Seconds(), c.read.Seconds(), c.timeRatio(), 100*c.cpuAvg, 100*c.cpuPeak)
}

// captureBench runs the capture scenario on every kind of --capture-fs.
// A filesystem image the filesystem scenarios made of the same size and
// share is reused (the quick run's ext4).
func captureBench(ctx context.Context, cfg *config, imgs map[string]*benchImage, out io.Writer) ([]captureResult, error) {
	var res []captureResult
	for _, kind := range cfg.capKinds {
		path, reused := "", false
		if img := imgs[kind]; img != nil && img.size == cfg.capSize && cfg.capUsedPct == cfg.fsUsedPct {
			path, reused = img.path, true
		} else {
			dir := filepath.Join(cfg.work, "capture-"+kind)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return res, err
			}
			path = filepath.Join(dir, kind+".img")
			if _, err := makeFSImage(dir, path, kind, cfg.capSize, cfg.capUsedPct); err != nil {
				return res, fmt.Errorf("capture: make the %s image: %w", kind, err)
			}
		}
		rates := []int64{0}
		if cfg.capSlowDisk > 0 {
			rates = append(rates, int64(cfg.capSlowDisk*float64(cfg.capRate)/8))
		}
		for _, dr := range rates {
			c, err := captureOne(ctx, cfg, kind, path, dr)
			if err != nil {
				return res, fmt.Errorf("capture of the %s image (%s): %w", kind, c.disk(), err)
			}
			fmt.Fprintln(out, c.line())
			res = append(res, c)
		}
		if !reused {
			os.Remove(path)
		}
	}
	return res, nil
}

func captureOne(ctx context.Context, cfg *config, kind, path string, diskRate int64) (c captureResult, err error) {
	c = captureResult{kind: kind, rate: cfg.capRate, diskRate: diskRate}
	if c.used, c.usedBy, err = fsUsed(kind, path); err != nil {
		return c, err
	}
	b, err := exec.Command("losetup", "-r", "--direct-io=on", "-f", "--show", path).CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("losetup -r %s: %v: %s (the capture scenario needs a free loop device)", path, err, b)
	}
	dev := strings.TrimSpace(string(b))
	defer exec.Command("losetup", "-d", dev).Run()

	// A slow disk: the loop device's reads throttled (blkio), for the
	// read floor and the capture alike.
	var wrap []string
	if diskRate > 0 {
		th, err := newThrottle(dev, diskRate)
		if err != nil {
			return c, err
		}
		defer th.close()
		wrap = th.wrap()
	}

	// The read floor, from a flushed cache, in a process of its own.
	if err := dropCaches(dev, path); err != nil {
		return c, err
	}
	self, err := os.Executable()
	if err != nil {
		return c, err
	}
	args := append(slices.Clone(wrap), self, "read-used", dev)
	if b, err = exec.Command(args[0], args[1:]...).Output(); err != nil {
		return c, fmt.Errorf("the read floor (%s): %w", strings.Join(args, " "), err)
	}
	var ns int64
	if _, err := fmt.Sscanf(string(b), "read-used: %d %d %d %d", &c.size, &c.mapUsed, &c.extents, &ns); err != nil {
		return c, fmt.Errorf("the read floor printed %q: %w", b, err)
	}
	c.read = time.Duration(ns)

	l, err := newLab(1, cfg.capRate, nil)
	if err != nil {
		return c, fmt.Errorf("build the LAN: %w", err)
	}
	defer l.close()
	// One frame per packet on the client's link, as Ethernet carries
	// them: with segmentation offload the veth counters see a 64 KiB
	// packet with one set of headers, and would leave out most of them.
	if err := sh("ip", "-n", l.ns(clientName(1)), "link", "set", "eth0", "gso_max_segs", "1"); err != nil {
		return c, err
	}
	dir, err := os.MkdirTemp(cfg.work, "capture")
	if err != nil {
		return c, err
	}
	defer os.RemoveAll(dir)
	srv, err := startServe(ctx, cfg, l, dir)
	if err != nil {
		return c, err
	}
	defer srv.stop()

	if err := dropCaches(dev, path); err != nil {
		return c, err
	}
	url := "http://" + serverIP() + ":8080"
	name := "golden-" + kind
	cctx, cancel := context.WithTimeout(ctx, 4*max(floorOf(c.mapUsed, cfg.capRate), c.read)+time.Minute)
	defer cancel()
	sent0, back0 := l.portBytes(clientName(1), true), l.portBytes(clientName(1), false)
	cpu := startCPU()
	t0 := time.Now()
	args = append(slices.Clone(wrap), "ip", "netns", "exec", l.ns(clientName(1)), cfg.bin, "capture", "--server", url, "--token-file", filepath.Join(dir, "state", "admin-token"),
		"--name", name, "--disk", dev, "--progress-every", "5s")
	cmd := exec.CommandContext(cctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
	out, err := cmd.CombinedOutput()
	c.took = time.Since(t0)
	c.cpuAvg, c.cpuPeak = cpu.end()
	c.wire, c.wireBack = l.portBytes(clientName(1), true)-sent0, l.portBytes(clientName(1), false)-back0
	if err != nil {
		return c, fmt.Errorf("pxeswarm capture: %v: %s; the server said: %s", err, tail(string(out), 5), srv.tail())
	}
	m := regexp.MustCompile(`capture: published (\S+) `).FindStringSubmatch(string(out))
	if m == nil {
		return c, fmt.Errorf("pxeswarm capture printed no \"published\" line: %s", tail(string(out), 5))
	}
	c.published = m[1]
	if os.Getenv("BENCH_DEBUG") != "" {
		fmt.Printf("%s\nserver: %s\n", out, srv.tail())
	}
	// What the server took in, from its read API (after the counters).
	js, err := l.command(ctx, clientName(1), "curl", "-sf", url+"/api/captures").Output()
	if err != nil {
		return c, fmt.Errorf("GET /api/captures: %w", err)
	}
	var sts []protocol.CaptureState
	if err := json.Unmarshal(js, &sts); err != nil {
		return c, fmt.Errorf("GET /api/captures: %w", err)
	}
	for _, st := range sts {
		if st.Image == c.published && st.State == protocol.CapturePublished {
			c.bytesIn = st.BytesIn
		}
	}
	if c.bytesIn == 0 {
		return c, fmt.Errorf("no published capture %s in GET /api/captures: %s", c.published, js)
	}
	return c, nil
}

// fsUsed is the bytes in use in the filesystem at path, as its own tools
// count them, and which tool said so.
func fsUsed(kind, path string) (int64, string, error) {
	field := func(out []byte, re string) (int64, error) {
		m := regexp.MustCompile(re).FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("no %s in: %s", re, out)
		}
		return strconv.ParseInt(string(m[1]), 10, 64)
	}
	var tool string
	var total, free, unit string
	switch kind {
	case "ext4":
		tool, total, free, unit = "dumpe2fs -h", `(?m)^Block count:\s+(\d+)`, `(?m)^Free blocks:\s+(\d+)`, `(?m)^Block size:\s+(\d+)`
	case "ntfs":
		tool, total, free, unit = "ntfsinfo -m", `Volume Size in Clusters: (\d+)`, `Free Clusters: (\d+)`, `Cluster Size: (\d+)`
	default:
		return 0, "", fmt.Errorf("filesystem %q: want ext4 or ntfs", kind)
	}
	args := strings.Fields(tool)
	out, err := exec.Command(args[0], append(args[1:], path)...).Output()
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", tool, path, err)
	}
	var n [3]int64
	for i, re := range []string{total, free, unit} {
		if n[i], err = field(out, re); err != nil {
			return 0, "", fmt.Errorf("%s: %w", tool, err)
		}
	}
	return (n[0] - n[1]) * n[2], tool, nil
}

// dropCaches flushes the loop device's buffer cache (BLKFLSBUF) and drops
// its backing file's pages, so a read goes to the host's disk.
func dropCaches(dev, backing string) error {
	for _, p := range []string{dev, backing} {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		if p == dev {
			err = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
		} else {
			err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("drop the cache of %s: %w", p, err)
		}
	}
	return nil
}

// readUsedMain is `bench read-used DEV`: the read floor in a process of
// its own (so a blkio cgroup can hold it), printing "read-used: SIZE USED
// EXTENTS NANOSECONDS".
func readUsedMain(args []string) {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: bench read-used DEVICE")
		os.Exit(2)
	}
	t0 := time.Now()
	size, used, extents, err := readUsed(args[0])
	took := time.Since(t0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench read-used:", err)
		os.Exit(1)
	}
	fmt.Printf("read-used: %d %d %d %d\n", size, used, extents, took.Nanoseconds())
}

// throttle is a blkio cgroup (v1) that caps the reads of one block
// device; what it wraps runs inside it.
type throttle struct{ dir string }

const blkioRoot = "/sys/fs/cgroup/blkio"

func newThrottle(dev string, bps int64) (*throttle, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, err
	}
	t := &throttle{dir: filepath.Join(blkioRoot, fmt.Sprintf("pxeswarm-bench-%d", os.Getpid()))}
	if err := os.Mkdir(t.dir, 0o755); err != nil {
		return nil, fmt.Errorf("a slow disk needs a blkio cgroup (v1, at %s): %w; give --capture-slow-disk 0 to leave it out", blkioRoot, err)
	}
	rule := fmt.Sprintf("%d:%d %d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), bps)
	if err := os.WriteFile(filepath.Join(t.dir, "blkio.throttle.read_bps_device"), []byte(rule), 0o644); err != nil {
		os.Remove(t.dir)
		return nil, fmt.Errorf("throttle %s: %w", dev, err)
	}
	return t, nil
}

// wrap is the command prefix that runs the rest inside the cgroup.
func (t *throttle) wrap() []string {
	return []string{"sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, t.dir}
}

// close removes the cgroup once its processes have gone (bounded: 5 s).
func (t *throttle) close() {
	for i := 0; i < 50; i++ {
		if os.Remove(t.dir) == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "bench: could not remove the cgroup %s; rmdir it\n", t.dir)
}

// readUsed finds dev's used blocks as capture does and reads them, in
// order, 1 MiB at a time; it returns the device's size, the bytes read
// and the extents.
func readUsed(dev string) (size, used int64, extents int, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	if size, err = f.Seek(0, io.SeekEnd); err != nil {
		return 0, 0, 0, err
	}
	m, err := usedmap.Detect(f, size)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("used blocks of %s: %w", dev, err)
	}
	buf := make([]byte, 1<<20)
	for _, e := range m.Extents {
		for off := e.Off; off < e.End(); {
			n := int(min(int64(len(buf)), e.End()-off))
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				return 0, 0, 0, fmt.Errorf("read %s at %d: %w", dev, off, err)
			}
			off += int64(n)
		}
	}
	return size, m.Used(), len(m.Extents), nil
}

// serveProc is pxeswarm serve in the lab's server namespace.
type serveProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startServe runs pxeswarm serve with captures on and no image (DHCP and
// TFTP off) and waits until it is ready.
func startServe(ctx context.Context, cfg *config, l *lab, dir string) (*serveProc, error) {
	for _, f := range []string{"vmlinuz", "initramfs"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			return nil, err
		}
	}
	s := &serveProc{log: filepath.Join(dir, "serve.log"), done: make(chan struct{})}
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	s.cmd = l.command(ctx, "srv", cfg.bin, "serve", "--dhcp", "off", "--tftp-listen", "off", "--address", serverIP(),
		"--http-listen", serverIP()+":8080", "--seed-port", "6881", "--state-dir", filepath.Join(dir, "state"),
		"--capture-dir", filepath.Join(dir, "captures"),
		"--kernel", filepath.Join(dir, "vmlinuz"), "--initramfs", filepath.Join(dir, "initramfs"))
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pxeswarm serve: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if b, _ := os.ReadFile(s.log); strings.Contains(string(b), pxe.Ready) {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("pxeswarm serve exited before it was ready: %s", s.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.stop()
	return nil, fmt.Errorf("pxeswarm serve was not ready within 30 s: %s", s.tail())
}

// stop ends serve (SIGTERM to its process group, SIGKILL after 5 s).
func (s *serveProc) stop() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

func (s *serveProc) tail() string {
	b, _ := os.ReadFile(s.log)
	return tail(string(b), 5)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// The quick run's bounds on a capture. Wire: issue 17's own 1.05 × used.
// Headers alone are 1.0456 (a 1514-byte frame for 1448 of data), and
// every run measured 1.046 (the capture's own framing is under 0.1%, and
// TCP resent nothing), so the bound catches any real overhead, such as
// free blocks sent, or a resend. Time: 1.3 × max(used/R, read). The quick
// run captures at 25 Mbit/s (used/R 13 s), where it measured 1.10 with
// both cores busy with other work: headers 4.6%, and about 0.8 s of fixed
// cost (start, the server's re-hash, publishing); 1.3 leaves 2.6 s of
// noise. At 100 Mbit/s (used/R 3.2 s) that fixed cost measured 1.25–1.41×
// on the same busy machine, too close to any bound that means something.
//
// In `make test` a failed run fails CI, so the wire bound is 1.06: a run
// with a little over 0.4% resent (possible on a loaded CI box) would fail
// 1.05 without capture sending anything extra. The full run reports the
// measured ratio against the goal's 1.05.
const (
	captureWireBound = 1.06
	captureTimeBound = 1.3
)

// checkCapture fails the quick run when a capture moved more than
// captureWireBound × used over its link or took longer than
// captureTimeBound × max(used/R, read).
func checkCapture(res []captureResult) error {
	for _, c := range res {
		fmt.Printf("quick bench: capture %s: wire %.3f×used (bound %.2f), T_capture %.2f×max(used/R, read) (bound %.2f)\n",
			c.kind, c.wireRatio(), captureWireBound, c.timeRatio(), captureTimeBound)
		if c.wireRatio() > captureWireBound {
			return fmt.Errorf("quick bench: the %s capture moved %s over its link for %s used (%.3f×), over %.2f×",
				c.kind, bytesize.Format(c.wire), bytesize.Format(c.used), c.wireRatio(), captureWireBound)
		}
		if c.timeRatio() > captureTimeBound {
			return fmt.Errorf("quick bench: the %s capture took %.1f s, %.2f× max(used/R %.1f s, read %.2f s), over %.2f×",
				c.kind, c.took.Seconds(), c.timeRatio(), c.linkFloor().Seconds(), c.read.Seconds(), captureTimeBound)
		}
	}
	return nil
}

// captureMarkdown is the report's capture section.
func captureMarkdown(cfg *config, res []captureResult) string {
	diskNote := `- Disk: each golden disk is captured as it is (this machine's disk reads
  far faster than R, so used/R is the slower floor)`
	if cfg.capSlowDisk > 0 {
		diskNote += fmt.Sprintf(`, then with the loop
  device's reads throttled to %s × R (a blkio cgroup holding both the
  read floor's process and the capture), so the read is the slower floor`, strconv.FormatFloat(cfg.capSlowDisk, 'g', -1, 64))
	}
	diskNote += ".\n  T/max is against the slower floor: issue 17's target is 1 (at link\n  rate, TCP's headers alone make it 1.046).\n"
	var b strings.Builder
	fmt.Fprintf(&b, `
## Capture (golden disk to server)

Issue 17's goal: a capture moves about the used bytes (at most 1.05 × used
over the network) and finishes at the slower of disk read and link rate.
The golden disk is a filesystem image of S = **%d MiB**, about %d%% used
(made as the filesystem images above), attached read-only as a loop device
with direct I/O (`+"`losetup -r --direct-io=on`"+`); `+"`pxeswarm serve`"+` (captures
on, no image) runs in the server namespace and `+"`pxeswarm capture --disk /dev/loopN`"+`
in a client namespace, over one link of R = %d Mbit/s.

- Used: the bytes in use as the filesystem's own tools count them
  (`+"`dumpe2fs -h`"+`, `+"`ntfsinfo -m`"+`).
- Wire: the bytes the client's link carried out during the capture, its
  switch port's counter, with segmentation offload off on that link
  (`+"`gso_max_segs 1`"+`) so that every frame counts with its Ethernet, IP and
  TCP headers (not the preamble and gap). By arithmetic a full frame is
  1514 bytes for 1448 of data: no TCP transfer goes below 1.046× on this
  count, and issue 17's 1.05 leaves 0.4%% for everything else. Server took
  in: the data bytes the server counted (GET /api/captures). ACKs: what the
  link carried back.
- T_capture: from starting `+"`pxeswarm capture`"+` to its exit, the image
  published. Floors: used/R (the used bytes over the link) and read: the
  time to find the used blocks (usedmap, as capture does) and read them in
  order, 1 MiB at a time, from the same loop device, its cache flushed
  first as before the capture; no hashing, no sending.
%s
| filesystem | disk | used | wire | server took in | ACKs back | T_capture | used/R | read | T/(used/R) | T/read | T/max | CPU avg (peak) |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
`, cfg.capSize>>20, cfg.capUsedPct, cfg.capRate/1e6, diskNote)
	for _, c := range res {
		disk := "as is"
		if c.diskRate > 0 {
			disk = fmt.Sprintf("reads at %.2f MB/s", float64(c.diskRate)/1e6)
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f MiB (%.1f%%) | **%.3f×used** | %.3f×used | %.3f×used | %.1f s | %.1f s | %.2f s | **%.2f** | %.1f | %.2f | %.0f%% (%.0f%%) |\n",
			c.kind, disk, float64(c.used)/(1<<20), 100*float64(c.used)/float64(c.size), c.wireRatio(), float64(c.bytesIn)/float64(c.used),
			float64(c.wireBack)/float64(c.used), c.took.Seconds(), c.linkFloor().Seconds(), c.read.Seconds(),
			c.took.Seconds()/c.linkFloor().Seconds(), c.took.Seconds()/c.read.Seconds(), c.timeRatio(), 100*c.cpuAvg, 100*c.cpuPeak)
	}
	return b.String()
}
