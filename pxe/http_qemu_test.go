package pxe

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
)

// TestIPXEBootsScript runs Debian's iPXE (the QEMU NIC ROM under SeaBIOS,
// and iPXE's EFI driver under OVMF) against our iPXE scripts: a machine
// without a task must not fetch the kernel; a machine with a task must
// boot our kernel and initramfs with our command line. The initramfs is
// busybox printing /proc/cmdline, so the test sees what the agent would.
//
// Networking is QEMU's user mode restricted to the guest (restrict=on, on
// 198.18.0.0/24): the guest's only way out is a guestfwd to our server on
// 127.0.0.1, so no packet leaves the machine. Software emulation (TCG).
func TestIPXEBootsScript(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU (about a minute): skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 missing: apt-get install qemu-system-x86 ipxe-qemu ovmf (make test installs them)")
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	busybox := "/bin/busybox"
	for _, need := range []string{busybox, "/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/share/qemu/OVMF.fd"} {
		if _, err := os.Stat(need); err != nil {
			t.Skipf("%s missing (apt-get install busybox-static ipxe-qemu ovmf): %v", need, err)
		}
	}
	if len(kernels) == 0 {
		t.Skip("no kernel in /boot: apt-get install linux-image-amd64")
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initramfs")
	if err := writeBusyboxInitramfs(initrd, busybox); err != nil {
		t.Fatal(err)
	}

	for _, fw := range []string{"bios", "uefi"} {
		t.Run(fw, func(t *testing.T) {
			f := newFixture(t, nil)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			const guestServer = "198.18.0.100:8080" // not slirp's host alias (198.18.0.2): guestfwd refuses that
			cfg := f.cfg
			cfg.PublicURL = "http://" + guestServer
			cfg.Kernel, cfg.Initramfs = kernels[len(kernels)-1], initrd
			cfg.Cmdline = "console=ttyS0 panic=-1"
			h, err := cfg.HandlerWithLog(imager.TestLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var paths []string
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
				h.ServeHTTP(w, r)
			})}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			requested := func(p string) bool {
				mu.Lock()
				defer mu.Unlock()
				for _, q := range paths {
					if q == p {
						return true
					}
				}
				return false
			}

			const mac = "52:54:00:c0:ff:ee"
			run := func(t *testing.T, markers []string, until func() bool, timeout time.Duration) string {
				script := "http://" + guestServer + "/boot/52-54-00-c0-ff-ee.ipxe"
				args := []string{"-accel", "tcg", "-m", "512", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
					"-netdev", "user,id=n0,restrict=on,net=198.18.0.0/24,host=198.18.0.2,dhcpstart=198.18.0.15,bootfile=" + script +
						",guestfwd=tcp:" + guestServer + "-tcp:" + ln.Addr().String()}
				if fw == "bios" {
					// The default ROM (efi-virtio.rom, BIOS and EFI iPXE in one);
					// pxe-virtio.rom alone is never run by SeaBIOS here.
					args = append(args, "-device", "virtio-net-pci,netdev=n0,mac="+mac, "-boot", "n")
				} else {
					args = append(args, "-bios", "/usr/share/qemu/OVMF.fd",
						"-device", "virtio-net-pci,netdev=n0,mac="+mac+",romfile=/usr/lib/ipxe/qemu/efi-virtio.rom,bootindex=1")
				}
				return runQEMU(t, qemu, args, markers, until, timeout)
			}

			// No task: iPXE gets the local-disk script and never asks for
			// the kernel.
			t.Run("no task", func(t *testing.T) {
				out := run(t, nil, func() bool { return requested("/boot/52-54-00-c0-ff-ee.ipxe") }, 3*time.Minute)
				// OVMF mirrors iPXE's console to the serial port;
				// SeaBIOS's iPXE prints to VGA only.
				if want := "pxeswarm: no task for " + mac + ", booting local disk"; fw == "uefi" && !strings.Contains(out, want) {
					t.Errorf("console lacks %q", want)
				}
			})
			t.Logf("requests without a task: %v", paths)
			if !requested("/boot/52-54-00-c0-ff-ee.ipxe") {
				t.Fatalf("iPXE never fetched its script; requests: %v", paths)
			}
			if requested("/boot/vmlinuz") {
				t.Fatalf("a machine without a task fetched the kernel; requests: %v", paths)
			}

			task := f.addTask(`{"mac": "` + mac + `", "image": "demo"}`)
			t.Run("task", func(t *testing.T) {
				out := run(t, []string{"pxeswarm-http-test: cmdline"}, nil, 4*time.Minute)
				line := out[strings.LastIndex(out, "pxeswarm-http-test: cmdline"):]
				line, _, _ = strings.Cut(line, "\n")
				for _, want := range []string{"console=ttyS0", "pxeswarm.server=http://" + guestServer, "pxeswarm.mac=" + mac, "pxeswarm.task=" + task.ID} {
					if !strings.Contains(line, want) {
						t.Errorf("kernel command line %q lacks %q", line, want)
					}
				}
			})
			if !requested("/boot/vmlinuz") || !requested("/boot/initramfs") {
				t.Errorf("requests %v lack the kernel or initramfs", paths)
			}
			if st := f.state(task.ID); st != TaskBooting {
				t.Errorf("after booting: task state %s, want booting", st)
			}
		})
	}
}

// runQEMU runs QEMU until every marker appeared on its serial console in
// order, or (no markers) until until() holds and 10 more seconds passed,
// then kills it; it fails the test if that did not happen within timeout.
func runQEMU(t *testing.T, qemu string, args []string, markers []string, until func() bool, timeout time.Duration) string {
	t.Helper()
	t.Logf("%s %s", qemu, strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	found := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		rd := bufio.NewReader(stdout)
		next := 0
		for {
			line, err := rd.ReadString('\n')
			mu.Lock()
			out.WriteString(line)
			mu.Unlock()
			if next < len(markers) && strings.Contains(line, markers[next]) {
				next++
				if next == len(markers) {
					close(found)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	if until != nil {
		go func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if until() {
					select {
					case <-time.After(10 * time.Second):
						close(found)
					case <-ctx.Done():
					}
					return
				}
			}
		}()
	}
	start := time.Now()
	ok := false
	select {
	case <-found:
		ok = true
		t.Logf("done after %v", time.Since(start).Round(time.Millisecond))
	case <-ctx.Done():
	case <-readDone:
		select {
		case <-found:
			ok = true
		default:
		}
	}
	cancel()
	if cmd.Process != nil {
		cmd.Process.Kill() // our own child, by its PID
	}
	cmd.Wait()
	<-readDone
	mu.Lock()
	console := out.String()
	mu.Unlock()
	t.Logf("console (last 3000 bytes):\n%s", tail(console, 3000))
	if !ok {
		t.Fatalf("markers %q (or the wait condition) not met before QEMU exited or %v passed; stderr: %s", markers, timeout, errBuf.String())
	}
	return console
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// writeBusyboxInitramfs writes a newc cpio (uncompressed) holding busybox
// and an /init that prints the kernel command line and powers off.
func writeBusyboxInitramfs(path, busybox string) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	init := "#!/bin/busybox sh\n" +
		"/bin/busybox mount -t proc proc /proc\n" +
		"echo \"pxeswarm-http-test: cmdline $(/bin/busybox cat /proc/cmdline)\"\n" +
		"/bin/busybox poweroff -f\n"
	var b bytes.Buffer
	ino := 0
	entry := func(name string, mode uint32, data []byte, major, minor int) {
		ino++
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(name)+1, 0)
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.Write(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	entry("bin", 0o040755, nil, 0, 0)
	entry("dev", 0o040755, nil, 0, 0)
	entry("proc", 0o040755, nil, 0, 0)
	entry("dev/console", 0o020600, nil, 5, 1)
	entry("bin/busybox", 0o100755, bb, 0, 0)
	entry("init", 0o100755, []byte(init), 0, 0)
	entry("TRAILER!!!", 0, nil, 0, 0)
	return os.WriteFile(path, b.Bytes(), 0o644)
}
