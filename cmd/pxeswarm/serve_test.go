package main

import (
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/testnet"
)

// TestServeQuickModeAndStatus runs `pxeswarm serve` in quick mode on
// loopback (DHCP and TFTP off), gives a machine a task through the admin
// API, lets it fetch its iPXE script and checks `pxeswarm status` shows
// it (still pending: the agent's report moves it on). --auto all without
// DHCP is refused.
func TestServeQuickModeAndStatus(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "lab.img")
	data := make([]byte, 2<<20)
	rand.Read(data)
	os.WriteFile(img, data, 0o644)
	for _, f := range []string{"vmlinuz", "initramfs"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	port := strconv.Itoa(testnet.FreePort(t))
	url := "http://127.0.0.1:" + port
	srv := start(t, "serve", "--image", img, "--dhcp", "off", "--tftp-listen", "off", "--address", "127.0.0.1",
		"--http-listen", "127.0.0.1:"+port, "--seed-port", strconv.Itoa(testnet.FreePort(t)), "--state-dir", filepath.Join(dir, "state"),
		"--kernel", filepath.Join(dir, "vmlinuz"), "--initramfs", filepath.Join(dir, "initramfs"))
	srv.waitFor(t, regexp.MustCompile(`pxeswarm serve: ready`), 30*time.Second)
	token, err := os.ReadFile(filepath.Join(dir, "state", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", url+"/api/tasks", strings.NewReader(`{"mac": "52:54:00:ab:00:01", "image": "lab"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/tasks: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}

	resp, err := http.Get(url + "/boot/52-54-00-ab-00-01.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(script), "kernel "+url+"/boot/vmlinuz") {
		t.Fatalf("script = %q, want our kernel", script)
	}
	st := start(t, "status", "--server", url)
	if err := st.wait(t, 20*time.Second); err != nil {
		t.Fatalf("pxeswarm status: %v\n%s", err, st.output())
	}
	out := st.output()
	for _, want := range []string{"MACHINE", "52:54:00:ab:00:01", "pending", "swarm lab"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	// Bad flags and a wrong server are clear errors.
	bad := start(t, "serve", "--config", "x.toml", "--dhcp", "full")
	if err := bad.wait(t, 10*time.Second); err == nil || !strings.Contains(bad.output(), "cannot be combined with --config") {
		t.Errorf("serve --config with --dhcp: %v %q", err, bad.output())
	}
	noDHCP := start(t, "serve", "--image", img, "--dhcp", "off", "--auto", "all", "--state-dir", filepath.Join(dir, "state2"))
	if err := noDHCP.wait(t, 10*time.Second); err == nil || !strings.Contains(noDHCP.output(), "needs dhcp.mode full or proxy") {
		t.Errorf("serve --dhcp off --auto all: %v %q, want it refused", err, noDHCP.output())
	}
	off := start(t, "status", "--server", "http://127.0.0.1:"+strconv.Itoa(testnet.FreePort(t)))
	if err := off.wait(t, 20*time.Second); err == nil || !strings.Contains(off.output(), "is pxeswarm serve running") {
		t.Errorf("status against nothing: %v %q", err, off.output())
	}
}
