package pxe

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// grubCheck runs GRUB's own parser (grub-script-check) on a config, when
// it is installed.
func grubCheck(t *testing.T, name, cfg string) {
	t.Helper()
	if _, err := exec.LookPath("grub-script-check"); err != nil {
		t.Logf("grub-script-check missing (grub-common): %s not parsed by GRUB", name)
		return
	}
	cmd := exec.Command("grub-script-check")
	cmd.Stdin = strings.NewReader(cfg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("grub-script-check %s: %v\n%s\n%s", name, err, out, cfg)
	}
}

// TestGrubConfig: GRUB's bootstrap chains the machine's config by
// $net_default_mac; a machine without a task gets "exit 1" (back to the
// firmware, which boots the disk) and no kernel; one with a task gets
// Debian's kernel and our initramfs with the iPXE script's command line
// (without iPXE's initrd=, which the kernel's EFI stub would try to open).
// GRUB's parser accepts all three. The same answers come over HTTP.
func TestGrubConfig(t *testing.T) {
	f := newFixture(t, nil)
	get := func(path string) string {
		t.Helper()
		w := f.do("GET", path, "")
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, w.Code, w.Body)
		}
		return w.Body.String()
	}
	boot := get("/grub/grub.cfg")
	if !strings.Contains(boot, "configfile ${prefix}/${net_default_mac}.cfg") {
		t.Errorf("bootstrap does not chain the machine's config:\n%s", boot)
	}
	grubCheck(t, "grub.cfg", boot)

	local := get("/grub/" + macA + ".cfg")
	if !strings.Contains(local, "no task for "+macA) || !strings.Contains(local, "set root=$esp\n\t\tchainloader $loader") ||
		!strings.HasSuffix(local, "exit 1\n") || strings.Contains(local, "linux") {
		t.Errorf("config without a task =\n%s\nwant the disk's loader chainloaded, exit 1 last, and no kernel", local)
	}
	grubCheck(t, "local", local)

	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	cfg := get("/grub/" + strings.ToUpper(macA) + ".cfg")
	script := get("/boot/" + macA + ".ipxe")
	var ipxeArgs string
	for _, l := range strings.Split(script, "\n") {
		if rest, ok := strings.CutPrefix(l, "kernel "+testPublic+"/boot/vmlinuz "); ok {
			ipxeArgs = strings.TrimPrefix(rest, "initrd=initramfs ")
		}
	}
	wantLinux := "linux /boot/vmlinuz " + ipxeArgs + "\n"
	if ipxeArgs == "" || !strings.Contains(ipxeArgs, "pxeswarm.task="+task.ID) || !strings.Contains(cfg, wantLinux) ||
		!strings.Contains(cfg, "initrd /boot/initramfs\n") || !strings.HasSuffix(cfg, "boot\n") || strings.Contains(cfg, "initrd=") {
		t.Errorf("config with a task =\n%s\nwant %q (the iPXE script's arguments) and our initramfs", cfg, wantLinux)
	}
	grubCheck(t, "task", cfg)

	for _, bad := range []string{"/grub/x86_64-efi/grub.cfg", "/grub/nomac.cfg", "/grub/" + macA, "/grub/..%2fgrub.cfg"} {
		if w := f.do("GET", bad, ""); w.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", bad, w.Code)
		}
	}
}

// TestShimTFTP serves the shim chain over TFTP to the real tftp-hpa
// client: the loaders and kernel from their configured paths, byte for
// byte, and the machine's GRUB config made per request; a name outside
// them still goes to the root, which lacks it.
func TestShimTFTP(t *testing.T) {
	needs.Tool(t, "tftp")
	dir := t.TempDir()
	shim := bytes.Repeat([]byte("shim!"), 20000)
	grub := bytes.Repeat([]byte("grub?"), 30000)
	os.WriteFile(filepath.Join(dir, "shim.signed"), shim, 0o644)
	os.WriteFile(filepath.Join(dir, "grub.signed"), grub, 0o644)
	f := newFixture(t, func(c *HTTPConfig) {
		c.Shim, c.Grub = filepath.Join(dir, "shim.signed"), filepath.Join(dir, "grub.signed")
	})
	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	s, err := f.cfg.newServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	files, gen := s.TFTPFiles()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- TFTPConfig{Root: t.TempDir(), Files: files, Generate: gen}.Serve(ctx, testlog.New(t), conn)
	}()
	defer func() { cancel(); <-done }()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	get := func(remote string) ([]byte, string) {
		local := filepath.Join(t.TempDir(), "got")
		cmd := exec.Command("tftp", "-m", "binary", "127.0.0.1", strconv.Itoa(port), "-v", "-c", "get", remote, local)
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		out, _ := cmd.CombinedOutput()
		b, _ := os.ReadFile(local)
		return b, string(out)
	}
	for name, want := range map[string][]byte{ShimName: shim, "/" + GrubName: grub, "boot/vmlinuz": f.kernel, "/boot/initramfs": f.initramfs} {
		if got, out := get(name); !bytes.Equal(got, want) {
			t.Errorf("tftp get %s: %d bytes, want %d identical (%s)", name, len(got), len(want), out)
		}
	}
	// tftp-hpa reads "a:b" as host:file, so the hyphen spelling here;
	// TestGrubConfig asks with GRUB's colons.
	if got, out := get("/grub/" + strings.ReplaceAll(macA, ":", "-") + ".cfg"); !strings.Contains(string(got), "pxeswarm.task="+task.ID) {
		t.Errorf("tftp get grub/%s.cfg = %q (%s), want the agent config", macA, got, out)
	}
	if got, out := get("grub/grub.cfg"); !strings.Contains(string(got), "configfile") {
		t.Errorf("tftp get grub/grub.cfg = %q (%s), want the bootstrap", got, out)
	}
	if got, out := get("grub/x86_64-efi/grub.cfg"); len(got) > 0 || !strings.Contains(strings.ToLower(out), "error") {
		t.Errorf("tftp get grub/x86_64-efi/grub.cfg = %q (%s), want an error (GRUB then reads grub/grub.cfg)", got, out)
	}
}
