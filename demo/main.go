// Command demo is `make demo`: a virtual classroom being imaged. It builds
// the agent's initramfs and a small test OS, starts `pxeswarm serve` on a
// bridge inside a network namespace of its own (198.18.0.0/24), and boots
// three QEMU machines with blank disks on it, two UEFI (OVMF) and one BIOS
// (SeaBIOS), network first. They PXE-boot, are imaged from the swarm,
// reboot, PXE-boot again, get "no task" and boot their disks; the UEFI ones
// print the new system's marker. Live progress comes from `pxeswarm status
// --watch`; a summary ends it. Everything is torn down afterwards; the
// working folder (consoles, server log) is kept when something failed.
//
// It needs root (namespaces, taps) and runs QEMU with software emulation.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/pxe"
)

const (
	serverCIDR = "198.18.0.1/24"
	serverURL  = "http://198.18.0.1:8080"
	// The demo machine reaches the server's web console over a veth.
	consoleHostCIDR = "198.18.255.1/30"
	consoleNSCIDR   = "198.18.255.2/30"
	consoleURL      = "http://198.18.255.2:8080/room"
)

type machine struct {
	name    string
	fw      qemu.Firmware
	mac     string
	tap     string
	disk    string
	console *logFile
	started time.Time
	done    time.Duration // start to IMAGE DONE
	written string        // the agent's "image written" line
	newSys  bool          // the new system's marker seen (UEFI) / disk booted (BIOS)
	err     error
}

// logFile is a console log on disk that can also be searched.
type logFile struct {
	mu sync.Mutex
	f  *os.File
	b  bytes.Buffer
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	return l.f.Write(p)
}

func (l *logFile) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func main() {
	bin := flag.String("pxeswarm", "bin/pxeswarm", "the pxeswarm binary")
	keep := flag.Bool("keep", false, "keep the working folder even on success")
	dataSize := flag.Int64("data", 96<<20, "bytes in the test OS's data partition")
	shot := flag.String("screenshot", "", "also save a screenshot of the web console's room page, taken while the machines are imaged, to this PNG file (needs chromium)")
	capture := flag.Bool("capture", false, "the image's life from a golden machine: capture pc1's disk over PXE, then deploy it to the others (make demo-capture)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d := &demo{bin: *bin, log: log, shot: *shot}
	run, passed := d.run, "every machine was imaged from the swarm and booted its new disk."
	if *capture {
		run, passed = d.runCapture, "the golden machine was captured over PXE, and the copies were imaged from the swarm and booted the golden system."
	}
	err := run(ctx, *dataSize)
	d.cleanup(err != nil || *keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo passed: " + passed)
}

type demo struct {
	bin      string
	shot     string // where to save the room page's screenshot ("" none)
	log      *slog.Logger
	work     string
	ns       string
	serve    *exec.Cmd
	vmsMu    sync.Mutex // machines start from several goroutines
	vms      []*qemu.VM
	machines []*machine
	tos      *build.TestOS
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (d *demo) run(ctx context.Context, dataSize int64) error {
	boot, err := d.prepare(ctx, "demo")
	if err != nil {
		return err
	}

	step("building the test OS image: GPT, an EFI system partition (systemd-boot, kernel, an init that prints its marker) and a %s data partition", bytesize.Format(dataSize))
	if d.tos, err = (build.TestOSConfig{Dir: filepath.Join(d.work, "testos"), ESPSize: 40 << 20, DataSize: dataSize}).Build(ctx, d.log); err != nil {
		return err
	}
	fmt.Printf("image %s, %s in 2 parts; the new system will print: %s %s\n", d.tos.Image.Name,
		bytesize.Format(d.tos.Image.Length), build.NewSystemMarker, d.tos.Digest)

	if err := d.classroom(ctx, boot, "starting pxeswarm serve (full DHCP, TFTP, HTTP, tracker, seeder; --auto all gives each machine one task)", []*machine{
		{name: "pc1-uefi", fw: qemu.UEFI, mac: "52:54:00:de:00:01"},
		{name: "pc2-uefi", fw: qemu.UEFI, mac: "52:54:00:de:00:02"},
		{name: "pc3-bios", fw: qemu.BIOS, mac: "52:54:00:de:00:03"},
	}); err != nil {
		return err
	}
	step("powering on 3 machines with blank disks; they PXE-boot, get imaged, reboot")
	fmt.Println("consoles:", filepath.Join(d.work, "*.console.log"))
	if err := d.imageAll(ctx, d.machines); err != nil {
		return err
	}

	step("booting them again: no task now, so each boots its own disk")
	return d.rebootAll(ctx)
}

// prepare checks for root, makes the work folder and builds the boot
// files; target is the make target that runs the demo as root.
func (d *demo) prepare(ctx context.Context, target string) (boot string, err error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("run as root: the classroom lives in a network namespace with taps (sudo make %s)", target)
	}
	if d.work, err = os.MkdirTemp("", "pxeswarm-demo-"); err != nil {
		return "", err
	}
	return d.buildBoot(ctx)
}

// classroom wires the network namespace with a tap for each of ms, starts
// pxeswarm serve (serverStep is the step line that says what it runs),
// and gives the machines their taps and blank disks.
func (d *demo) classroom(ctx context.Context, boot, serverStep string, ms []*machine) error {
	step("wiring the classroom: namespace %s, bridge br0 %s, a tap per machine", d.nsName(), serverCIDR)
	if err := d.network(len(ms)); err != nil {
		return err
	}
	step("%s", serverStep)
	if err := d.startServer(ctx, boot); err != nil {
		return err
	}
	d.machines = ms
	return d.blankDisks()
}

// blankDisks gives each machine its tap and a blank 256 MiB disk.
func (d *demo) blankDisks() error {
	for i, m := range d.machines {
		m.tap = fmt.Sprintf("tap%d", i+1)
		m.disk = filepath.Join(d.work, m.name+".img")
		f, err := os.Create(m.disk)
		if err != nil {
			return err
		}
		err = f.Truncate(256 << 20)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// imageAll boots the machines for imaging at once, with the live status
// view and the console's screenshot, and waits until each is imaged and
// rebooted (or failed).
func (d *demo) imageAll(ctx context.Context, ms []*machine) error {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); d.image(ctx, m) }()
	}
	go d.screenshot(ctx)
	// The status view ends when no task is active; it is also stopped a
	// little after the machines are done, so a task left active by a
	// machine that failed cannot keep it running.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch := exec.CommandContext(watchCtx, "ip", "netns", "exec", d.nsName(), d.bin, "status", "--server", serverURL, "--watch", "--every", "3s", "--until-done")
	watch.Stdout, watch.Stderr = os.Stdout, os.Stdout
	watchDone := make(chan error, 1)
	go func() { watchDone <- watch.Run() }()
	wg.Wait()
	var watchErr error
	select {
	case watchErr = <-watchDone:
	case <-time.After(30 * time.Second):
		stopWatch()
		<-watchDone
	}
	for _, m := range ms {
		if m.err != nil {
			return fmt.Errorf("%s: %w (console: %s)", m.name, m.err, m.console.f.Name())
		}
	}
	if watchErr != nil {
		return fmt.Errorf("pxeswarm status: %w", watchErr)
	}
	return nil
}

// buildBoot builds the terminals' kernel and initramfs with a new key
// pair in the state folder, and returns the boot folder.
func (d *demo) buildBoot(ctx context.Context) (string, error) {
	state := filepath.Join(d.work, "state") // build initramfs makes the key pair here
	step("building the terminals' kernel and initramfs (u-root + the pxeswarm agent + NIC/disk modules)")
	boot := filepath.Join(d.work, "boot")
	cmd := exec.CommandContext(ctx, d.bin, "build", "initramfs", "--out", boot, "--key", filepath.Join(state, "plan-key.pub"))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pxeswarm build initramfs: %w", err)
	}
	return boot, nil
}

// screenshot saves the web console's room page (open read-only in the
// demo) once a machine has written for a while, with headless Chromium
// from the machine running the demo, and copies it to d.shot.
func (d *demo) screenshot(ctx context.Context) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		fmt.Println("screenshot: no chromium here (apt-get install chromium); skipped")
		return
	}
	deadline := time.Now().Add(10 * time.Minute)
	for !d.anyConsoleHas("pxeswarm: writing") {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(time.Second)
	}
	time.Sleep(40 * time.Second)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 800), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	sctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	// The room page fills its table from the event stream: wait for a
	// progress bar, then a moment for the next snapshot.
	err = chromedp.Do(sctx, chromedp.Navigate(consoleURL), chromedp.WaitVisible(chromedp.CSS(`[data-test=progress]`)), chromedp.Sleep(3*time.Second))
	var buf []byte
	if err == nil {
		buf, err = chromedp.Run(sctx, chromedp.FullScreenshot(100))
	}
	if err != nil {
		fmt.Printf("screenshot: %v\n", err)
		return
	}
	out := filepath.Join(d.work, "console-room.png")
	if err := os.WriteFile(out, buf, 0o644); err != nil {
		fmt.Println("screenshot:", err)
		return
	}
	fmt.Printf("\nscreenshot of the web console's room page: %s\n", out)
	if d.shot != "" {
		if err := os.WriteFile(d.shot, buf, 0o644); err != nil {
			fmt.Println("screenshot:", err)
		}
	}
}

// anyConsoleHas reports whether a machine's console shows s.
func (d *demo) anyConsoleHas(s string) bool {
	for _, m := range d.machines {
		if c := m.console; c != nil && strings.Contains(c.String(), s) {
			return true
		}
	}
	return false
}

func (d *demo) nsName() string { return fmt.Sprintf("pxsdemo%d", os.Getpid()) }

func (d *demo) network(taps int) error {
	d.ns = d.nsName()
	if err := sh("ip", "netns", "add", d.ns); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "-n", d.ns, "link", "set", "lo", "up"},
		{"ip", "-n", d.ns, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", d.ns, "addr", "add", serverCIDR, "dev", "br0"},
		{"ip", "-n", d.ns, "link", "set", "br0", "up"},
	}
	for i := 1; i <= taps; i++ {
		tap := fmt.Sprintf("tap%d", i)
		steps = append(steps, []string{"ip", "-n", d.ns, "tuntap", "add", tap, "mode", "tap"},
			[]string{"ip", "-n", d.ns, "link", "set", tap, "master", "br0", "up"})
	}
	// A veth to the machine running the demo: the web console is
	// reachable from its browser at consoleURL.
	host := fmt.Sprintf("pxsd%d", os.Getpid()%100000)
	steps = append(steps,
		[]string{"ip", "link", "add", host, "type", "veth", "peer", "name", "uplink", "netns", d.ns},
		[]string{"ip", "addr", "add", consoleHostCIDR, "dev", host},
		[]string{"ip", "link", "set", host, "up"},
		[]string{"ip", "-n", d.ns, "addr", "add", consoleNSCIDR, "dev", "uplink"},
		[]string{"ip", "-n", d.ns, "link", "set", "uplink", "up"})
	for _, s := range steps {
		if err := sh(s...); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) startServer(ctx context.Context, boot string) error {
	logf, err := os.Create(filepath.Join(d.work, "server.log"))
	if err != nil {
		return err
	}
	args := []string{"netns", "exec", d.ns, d.bin, "serve"}
	if d.tos != nil {
		args = append(args, "--image", d.tos.Torrent, "--source", d.tos.ESP+","+d.tos.Data, "--auto", "all")
	}
	args = append(args, "--interface", "br0", "--dhcp", "full", "--state-dir", filepath.Join(d.work, "state"),
		"--kernel", filepath.Join(boot, "vmlinuz"), "--initramfs", filepath.Join(boot, "initramfs"),
		"--cmdline", "console=ttyS0 panic=-1", "--create-table", "--check", "fresh", "--console-open-room",
		"--seed-for", "20s", "--after", "reboot")
	d.serve = exec.CommandContext(ctx, "ip", args...)
	d.serve.Stdout, d.serve.Stderr = logf, logf
	d.serve.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the demo
	if err := d.serve.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logf.Name())
		if bytes.Contains(b, []byte(pxe.Ready)) {
			fmt.Printf("server ready at %s (log: %s)\n", serverURL, logf.Name())
			fmt.Printf("web console: %s from this machine's browser; log in with the admin token in %s\n",
				consoleURL, filepath.Join(d.work, "state", "admin-token"))
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := os.ReadFile(logf.Name())
	return fmt.Errorf("pxeswarm serve not ready within a minute:\n%s", b)
}

func (d *demo) start(ctx context.Context, m *machine, phase string) (*qemu.VM, error) {
	f, err := os.OpenFile(filepath.Join(d.work, m.name+".console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "\n===== %s: %s =====\n", m.name, phase)
	m.console = &logFile{f: f}
	vm, err := qemu.Config{Name: m.name, Firmware: m.fw, Memory: 768, NetNS: d.ns, Tap: m.tap, MAC: m.mac,
		BootNetwork: true, Disks: []qemu.Disk{{Path: m.disk}}, Timeout: 15 * time.Minute, Console: m.console,
		FirmwareLog: m.disk + ".fw.log",
	}.Boot(ctx, d.log)
	if err == nil {
		d.vmsMu.Lock()
		d.vms = append(d.vms, vm)
		d.vmsMu.Unlock()
	}
	return vm, err
}

var writtenRE = regexp.MustCompile(`image written.*downloaded=(\S+) from_seeders=(\S+)`)

// image runs the first boot: PXE → agent → imaged → reboot (QEMU exits on
// the guest's reboot: -no-reboot).
func (d *demo) image(ctx context.Context, m *machine) {
	m.started = time.Now()
	vm, err := d.start(ctx, m, "first boot: imaging")
	if err != nil {
		m.err = err
		return
	}
	for _, step := range []struct {
		marker  string
		timeout time.Duration
	}{{"pxeswarm: lease ok", 5 * time.Minute}, {"pxeswarm: plan ok", time.Minute}, {"pxeswarm: IMAGE DONE", 10 * time.Minute}, {"pxeswarm: rebooting", 3 * time.Minute}} {
		if _, err := vm.Expect(step.marker, step.timeout); err != nil {
			m.err = err
			vm.Kill()
			return
		}
		if step.marker == "pxeswarm: IMAGE DONE" {
			m.done = time.Since(m.started)
		}
	}
	if mm := writtenRE.FindString(m.console.String()); mm != "" {
		m.written = mm
	}
	if err := vm.Wait(); err != nil {
		m.err = fmt.Errorf("after its reboot: %w", err)
	}
}

// rebootAll boots every machine again at once (rebootCheck), prints the
// summary, and returns the first machine's error.
func (d *demo) rebootAll(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, m := range d.machines {
		wg.Add(1)
		go func() { defer wg.Done(); d.rebootCheck(ctx, m) }()
	}
	wg.Wait()
	d.summary()
	for _, m := range d.machines {
		if m.err != nil {
			return fmt.Errorf("%s: %w", m.name, m.err)
		}
	}
	return nil
}

// rebootCheck runs the second boot and looks for the new system.
func (d *demo) rebootCheck(ctx context.Context, m *machine) {
	vm, err := d.start(ctx, m, "second boot: its own disk")
	if err != nil {
		m.err = err
		return
	}
	defer vm.Kill()
	if m.fw == qemu.UEFI {
		if _, err := vm.Expect(build.NewSystemMarker+" "+d.tos.Digest, 5*time.Minute); err != nil {
			m.err = err
			return
		}
		m.newSys = true
		vm.Wait()
		return
	}
	// SeaBIOS's iPXE ROM talks to the screen; its debug port shows the
	// disk boot. The test OS has no BIOS boot loader, so that is as far
	// as a BIOS machine goes.
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(m.disk + ".fw.log")
		if bytes.Contains(b, []byte("Booting from Hard Disk")) && bytes.Count(b, []byte("Booting from ROM")) >= 1 {
			m.newSys = true
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	m.err = fmt.Errorf("SeaBIOS did not boot the disk within 5 minutes")
}

func (d *demo) summary() {
	step("summary")
	fmt.Printf("%-10s %-5s %-12s %-44s %s\n", "machine", "fw", "imaged in", "bytes (downloaded / from the server)", "new system")
	var down, fromServer int64
	for _, m := range d.machines {
		bytesCol := "-"
		if mm := writtenRE.FindStringSubmatch(m.written); mm != nil {
			dn, _ := bytesize.Parse(mm[1])
			sv, _ := bytesize.Parse(mm[2])
			down += dn
			fromServer += sv
			bytesCol = fmt.Sprintf("%s / %s", mm[1], mm[2])
		}
		seen := "marker seen: " + build.NewSystemMarker
		if m.fw == qemu.BIOS {
			seen = "disk booted (SeaBIOS)"
		}
		if !m.newSys {
			seen = "NOT SEEN"
		}
		fmt.Printf("%-10s %-5s %-12s %-44s %s\n", m.name, m.fw, m.done.Round(time.Second), bytesCol, seen)
	}
	if down > 0 {
		fmt.Printf("\nall machines downloaded %s: %s from the server, %s (%.0f%%) from each other.\n",
			bytesize.Format(down), bytesize.Format(fromServer), bytesize.Format(down-fromServer),
			100*float64(down-fromServer)/float64(down))
	}
}

func (d *demo) cleanup(keep bool) {
	for _, vm := range d.vms {
		vm.Kill()
	}
	if d.serve != nil && d.serve.Process != nil {
		d.serve.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.serve.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.serve.Process.Kill()
			<-done
		}
	}
	if d.ns != "" {
		if err := sh("ip", "netns", "del", d.ns); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}
	if d.work == "" {
		return
	}
	if keep {
		fmt.Println("kept the working folder (consoles, server log, disks):", d.work)
		return
	}
	os.RemoveAll(d.work)
}
