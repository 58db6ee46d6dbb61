package main

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/testnet"
	"github.com/pxeswarm/pxeswarm/pxe/wake"
)

// TestWakeAndScheduleCommands runs `pxeswarm serve` on loopback with
// [wake] pointed at a UDP listener standing in for the room's broadcast
// address: `pxeswarm wake --group` sends the group's magic packet, and
// `pxeswarm schedule add|list|delete` manage a weekly schedule. Without
// the token nothing is sent.
func TestWakeAndScheduleCommands(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "lab.img")
	data := make([]byte, 1<<20)
	rand.Read(data)
	os.WriteFile(img, data, 0o644)
	for _, f := range []string{"vmlinuz", "initramfs"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	ln, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := testnet.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`state_dir = %q
address = "127.0.0.1"
[http]
listen = "127.0.0.1:%d"
kernel = %q
initramfs = %q
[dhcp]
mode = "off"
[tftp]
listen = "off"
[seed]
port = %d
[wake]
broadcasts = ["127.0.0.1"]
port = %d
[[image]]
source = [%q]
[[machine]]
mac = "52:54:00:00:01:01"
group = "room-101"
`, filepath.Join(dir, "state"), port, filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs"), testnet.FreePort(t),
		ln.LocalAddr().(*net.UDPAddr).Port, img)
	os.WriteFile(filepath.Join(dir, "site.toml"), []byte(cfg), 0o644)
	srv := start(t, "serve", "--config", filepath.Join(dir, "site.toml"))
	srv.waitFor(t, regexp.MustCompile(`pxeswarm serve: ready`), 30*time.Second)
	token := filepath.Join(dir, "state", "admin-token")

	run := func(args ...string) (string, error) {
		t.Helper()
		p := start(t, args...)
		err := p.wait(t, 20*time.Second)
		return p.output(), err
	}
	// Without the right token: refused, nothing sent.
	os.WriteFile(filepath.Join(dir, "wrong"), []byte("wrong-token-0123456789"), 0o600)
	if out, err := run("wake", "--server", url, "--token-file", filepath.Join(dir, "wrong"), "--group", "room-101"); err == nil || !strings.Contains(out, "401") {
		t.Errorf("wake with a wrong token: %v %q, want 401", err, out)
	}
	ln.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 512)
	if n, _, err := ln.ReadFrom(buf); err == nil {
		t.Fatalf("a refused wake sent %x", buf[:n])
	}

	out, err := run("wake", "--server", url, "--token-file", token, "--group", "room-101")
	want := fmt.Sprintf("sent magic packet for 52:54:00:00:01:01 to %s", ln.LocalAddr())
	if err != nil || !strings.Contains(out, want) {
		t.Fatalf("pxeswarm wake: %v\n%s\nwant %q", err, out, want)
	}
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := ln.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no magic packet: %v", err)
	}
	if mac, _, err := wake.Parse(buf[:n]); err != nil || mac.String() != "52:54:00:00:01:01" {
		t.Fatalf("received %x: %v %v", buf[:n], mac, err)
	}

	if out, err := run("schedule", "add", "--server", url, "--token-file", token, "--weekly", "fri 22:00", "--group", "room-101",
		"--image", "lab", "--wake", "--after", "poweroff", "--name", "room 101 friday"); err != nil || !strings.Contains(out, "schedule s1: next Fri") {
		t.Fatalf("schedule add: %v\n%s", err, out)
	}
	if out, err := run("schedule", "list", "--server", url, "--token-file", filepath.Join(dir, "none")); err != nil ||
		!strings.Contains(out, "s1") || !strings.Contains(out, "fri 22:00") || !strings.Contains(out, "room-101") {
		t.Fatalf("schedule list: %v\n%s", err, out)
	}
	if out, err := run("schedule", "add", "--server", url, "--token-file", token, "--weekly", "someday", "--group", "room-101", "--image", "lab"); err == nil ||
		!strings.Contains(out, "bad weekly rule") {
		t.Errorf("schedule add with a bad rule: %v\n%s", err, out)
	}
	if out, err := run("schedule", "delete", "--server", url, "--token-file", token, "s1"); err != nil || !strings.Contains(out, "s1 deleted") {
		t.Fatalf("schedule delete: %v\n%s", err, out)
	}
	if out, err := run("schedule", "list", "--server", url, "--token-file", token); err != nil || strings.Contains(out, "s1") {
		t.Errorf("schedule list after delete: %v\n%s", err, out)
	}
	if out, _ := run("wake", "--help"); !strings.Contains(out, "--group") || !strings.Contains(out, "Wake-on-LAN") {
		t.Errorf("wake --help does not teach:\n%s", out)
	}
}
