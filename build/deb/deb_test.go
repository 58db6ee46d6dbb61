package deb

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// BootDirEnv names a folder with vmlinuz and initramfs from `pxeswarm
// build initramfs --key none` for TestPackage to package; without it the
// test packages random stand-ins (the real build takes minutes, and what
// the test checks is that the installed server sends the packaged bytes).
const BootDirEnv = "PXESWARM_DEB_BOOT_DIR"

// TestPackage builds the package, installs it with dpkg into a fresh root,
// checks its unit with systemd-analyze verify, and runs the installed
// binary chrooted into that root (so neither this tree nor Go is there):
// serve finds the packaged boot files by default and sends them, the
// initramfs followed by this server's plan key; `pxeswarm build initramfs`
// says what it needs.
func TestPackage(t *testing.T) {
	needs.Tool(t, "dpkg", "dpkg-deb", "systemd-analyze")
	needs.Root(t, "chroot into the installed root")
	if pxe.PackagedBootDir != BootDir {
		t.Fatalf("pxe.PackagedBootDir = %s, but the package installs the boot files in %s", pxe.PackagedBootDir, BootDir)
	}
	if "/"+pxe.KeyInitramfsPath != build.PublicKeyPath {
		t.Fatalf("serve appends the key at /%s, the agent reads %s", pxe.KeyInitramfsPath, build.PublicKeyPath)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "pxeswarm")
	gobuild := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/pxeswarm") // as make deb
	gobuild.Dir = "../.."
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	start := time.Now()
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pxeswarm: %v\n%s", err, out)
	}
	t.Logf("go build ./cmd/pxeswarm: %v", time.Since(start).Round(time.Millisecond))
	boot := os.Getenv(BootDirEnv)
	if boot == "" {
		boot = filepath.Join(dir, "boot")
		os.Mkdir(boot, 0o755)
		// Odd sizes: the key archive must still start 4-byte aligned.
		writeRandom(t, filepath.Join(boot, KernelName), 200_003)
		writeRandom(t, filepath.Join(boot, InitrdName), 700_001)
	}
	cfg := Config{Out: filepath.Join(dir, "pxeswarm.deb"), Binary: bin, BootDir: boot,
		Example: "../../docs/site.example.toml", Readme: "../../README.md", Version: "0.0.1~test"}
	start = time.Now()
	if err := cfg.Build(); err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("Build (the .deb): %v", time.Since(start).Round(time.Millisecond))
	if got := run(t, "dpkg-deb", "-f", cfg.Out, "Depends"); strings.TrimSpace(got) != "ipxe, shim-signed, grub-efi-amd64-signed" {
		t.Errorf("Depends = %q, want ipxe, shim-signed, grub-efi-amd64-signed", got)
	}

	// A fresh root: an empty dpkg database and nothing else.
	root := filepath.Join(dir, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The root has no shell to chroot the maintainer scripts into, so dpkg
	// runs them here with DPKG_ROOT set; ipxe is not in this root.
	start = time.Now()
	run(t, "dpkg", "--root="+root, "--force-script-chrootless", "--force-depends", "-i", cfg.Out)
	t.Logf("dpkg -i: %v", time.Since(start).Round(time.Millisecond))
	status := run(t, "dpkg", "--root="+root, "-s", Name)
	for _, want := range []string{"Status: install ok installed", "Conffiles:\n " + ConfigPath + " "} {
		if !strings.Contains(status, want) {
			t.Errorf("dpkg -s %s lacks %q:\n%s", Name, want, status)
		}
	}
	installed := map[string]string{bin: BinaryPath, filepath.Join(boot, KernelName): BootDir + "/" + KernelName,
		filepath.Join(boot, InitrdName): BootDir + "/" + InitrdName, cfg.Example: DocDir + "/" + ExampleName}
	for src, dst := range installed {
		if !sameFile(t, src, filepath.Join(root, dst)) {
			t.Errorf("%s in the root differs from %s", dst, src)
		}
	}
	for dst, want := range map[string][]byte{UnitPath: unit, ConfigPath: siteConfig} {
		if got, err := os.ReadFile(filepath.Join(root, dst)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s in the root: %v, or not the embedded file", dst, err)
		}
	}

	// The unit, against the root: its ExecStart binary must be there. The
	// targets it names come from the host's systemd, as on a real system.
	targets, _ := filepath.Glob("/usr/lib/systemd/system/*.target")
	for _, tg := range targets {
		data, err := os.ReadFile(tg)
		if err == nil {
			err = os.WriteFile(filepath.Join(root, filepath.Dir(UnitPath), filepath.Base(tg)), data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// verify exits 0 on unknown keys and bad values, only saying so:
	// any output is a failure.
	if out, err := exec.Command("systemd-analyze", "verify", "--root="+root, filepath.Base(UnitPath)).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify --root=%s %s: %v\n%s", root, filepath.Base(UnitPath), err, out)
	}

	// The packaged config is a valid site as installed (no image yet:
	// captures are on, so a first image can be captured) and once the
	// admin names an image (its interface only serve looks up).
	packagedConf, err := os.ReadFile(filepath.Join(root, ConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pxe.ParseSite(packagedConf); err != nil {
		t.Errorf("packaged %s as installed: %v", ConfigPath, err)
	}
	site, err := pxe.ParseSite(append(packagedConf, "\n[[image]]\nsource = [\"/srv/pxeswarm/images/lab.img\"]\n"...))
	if err != nil {
		t.Fatalf("packaged %s with an [[image]]: %v", ConfigPath, err)
	}
	if site.StateDir != "/var/lib/pxeswarm" || site.HTTP.Kernel != "/var/lib/pxeswarm/boot/vmlinuz" || site.DHCP.Mode != "proxy" {
		t.Errorf("packaged config: state_dir %q, http.kernel %q, dhcp.mode %q; want the defaults the package's boot fallback needs, and proxy mode",
			site.StateDir, site.HTTP.Kernel, site.DHCP.Mode)
	}

	// The dependencies' files serve needs (the default UEFI loader), as
	// shim-signed and grub-efi-amd64-signed would install them.
	for _, f := range []string{pxe.DefaultShim, pxe.DefaultGrub} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%v (install shim-signed and grub-efi-amd64-signed: scripts/deps.sh)", err)
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// serve, from the root, on a loopback port.
	port, seedPort := freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := os.MkdirAll(filepath.Join(root, "srv/images"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(root, "srv/images/test.img"), 1<<20)
	conf := fmt.Sprintf("state_dir = \"/var/lib/pxeswarm\"\naddress = \"127.0.0.1\"\npublic_url = %q\n"+
		"[http]\nlisten = \"127.0.0.1:%d\"\n[dhcp]\nmode = \"off\"\n[tftp]\nlisten = \"off\"\n[seed]\nport = %d\n"+
		"[[image]]\nsource = [\"/srv/images/test.img\"]\n", url, port, seedPort)
	if err := os.WriteFile(filepath.Join(root, "etc/pxeswarm/test.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	serve := chrooted(ctx, root, BinaryPath, "serve", "--config", "/etc/pxeswarm/test.toml")
	out, err := serve.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	serve.Stdout = serve.Stderr
	if err := serve.Start(); err != nil {
		t.Fatalf("start the installed pxeswarm serve: %v", err)
	}
	logs := readLog(out)
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		<-logs.done
		serve.Wait()
		t.Logf("the installed pxeswarm serve logged:\n%s", logs)
	}()
	logs.waitFor(t, pxe.Ready, 30*time.Second)
	if !strings.Contains(logs.String(), "boot files from the package") {
		t.Errorf("serve did not say it sends the package's boot files")
	}

	if shim := get(t, url+"/boot/"+pxe.ShimName, ""); !sameBytes(t, shim, filepath.Join(root, pxe.DefaultShim)) {
		t.Errorf("GET /boot/%s (%d bytes) is not shim-signed's", pxe.ShimName, len(shim))
	}
	kernel := get(t, url+"/boot/vmlinuz", "")
	if !sameBytes(t, kernel, filepath.Join(root, BootDir, KernelName)) {
		t.Errorf("GET /boot/vmlinuz (%d bytes) is not the packaged kernel", len(kernel))
	}
	initrd := get(t, url+"/boot/initramfs", "")
	packaged, err := os.ReadFile(filepath.Join(root, BootDir, InitrdName))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(root, "var/lib/pxeswarm/plan-key.pub"))
	if err != nil {
		t.Fatalf("serve made no plan key in its state folder: %v", err)
	}
	checkKeyed(t, initrd, packaged, pub)
	// A range across the seam, as a resumed download asks.
	from, to := len(packaged)-10, len(packaged)+20
	if part := get(t, url+"/boot/initramfs", fmt.Sprintf("bytes=%d-%d", from, to)); !bytes.Equal(part, initrd[from:to+1]) {
		t.Errorf("GET /boot/initramfs Range %d-%d = %d bytes, not those of the whole", from, to, len(part))
	}

	// build initramfs from the installed binary: no Go, no tree.
	b, err := chrooted(ctx, root, BinaryPath, "build", "initramfs", "--out", "/tmp/boot", "--key", "/tmp/key/plan-key.pub").CombinedOutput()
	if err == nil {
		t.Fatalf("pxeswarm build initramfs without Go or the source succeeded:\n%s", b)
	}
	t.Logf("pxeswarm build initramfs, installed: %v\n%s", err, b)
	for _, want := range []string{"Go tool chain", "source checkout", BootDir} {
		if !strings.Contains(string(b), want) {
			t.Errorf("pxeswarm build initramfs outside the tree says\n%s\nwhich lacks %q", b, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "tmp/key")); err == nil {
		t.Errorf("the failed build made a key pair in /tmp/key first")
	}
}

// checkKeyed checks got is the packaged initramfs, zeros up to a 4-byte
// boundary, then a newc archive whose plan-key.pub is pub: what the kernel
// unpacks as two archives, the second one adding the key.
func checkKeyed(t *testing.T, got, packaged, pub []byte) {
	t.Helper()
	if !bytes.HasPrefix(got, packaged) {
		t.Fatalf("GET /boot/initramfs (%d bytes) does not start with the packaged initramfs (%d bytes)", len(got), len(packaged))
	}
	rest := got[len(packaged):]
	pad := (4 - len(packaged)%4) % 4
	if len(rest) < pad || !bytes.Equal(rest[:pad], make([]byte, pad)) {
		t.Fatalf("after the packaged initramfs: %x..., want %d zero bytes", rest[:min(8, len(rest))], pad)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(rest[pad:])))
	if err != nil {
		t.Fatalf("the appended archive: %v", err)
	}
	found := false
	for _, r := range recs {
		if r.Name != pxe.KeyInitramfsPath {
			continue
		}
		data, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, pub) {
			t.Errorf("appended %s = %q, want the server's %q", r.Name, data, pub)
		}
		if _, err := protocol.ParsePublicKey(data); err != nil {
			t.Errorf("appended key: %v", err)
		}
		found = true
	}
	if !found {
		t.Errorf("the appended archive has no %s: %v", pxe.KeyInitramfsPath, recs)
	}
}

// chrooted runs the installed binary inside root, with a PATH of the
// root's own folders only.
func chrooted(ctx context.Context, root, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	return cmd
}

// serverLog collects a server's output lines and says when one holds a
// marker. The test logs it all at the end (a goroutine may not t.Log
// after the test returned).
type serverLog struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{} // closed at EOF
}

func readLog(r io.Reader) *serverLog {
	l := &serverLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// waitFor polls until a line holds marker; it fails t if the server
// exits or timeout passes first.
func (l *serverLog) waitFor(t *testing.T, marker string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(l.String(), marker) {
		select {
		case <-l.done:
			if !strings.Contains(l.String(), marker) {
				t.Fatalf("the installed server exited before %q", marker)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q from the installed server in %v", marker, timeout)
		}
	}
}

func get(t *testing.T, url, rng string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := http.StatusOK
	if rng != "" {
		req.Header.Set("Range", rng)
		want = http.StatusPartialContent
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != want {
		t.Fatalf("GET %s (Range %q) = %d, %v, want %d: %.200s", url, rng, res.StatusCode, err, want, body)
	}
	return body
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeRandom(t *testing.T, path string, n int) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	return sameBytes(t, da, b)
}

func sameBytes(t *testing.T, data []byte, path string) bool {
	t.Helper()
	db, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%v", err)
		return false
	}
	return bytes.Equal(data, db)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
