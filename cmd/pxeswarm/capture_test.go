package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/loopdev"

	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testnet"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// loopDev attaches file as a loop device until the test ends.
func loopDev(t *testing.T, file string) string {
	return loopdev.Attach(t, file, false)
}

// TestCaptureDeploy: `pxeswarm capture` sends an ext4, a FAT32 and an
// NTFS loop device to a running `pxeswarm serve`, which publishes each at
// once (no restart) and seeds it; `pxeswarm fetch` deploys the captured
// image from the server's torrent onto another loop device that held
// random bytes; the filesystem's own checker finds it clean and every
// file reads back identical. The golden device is byte-identical before
// and after, and the server took in at most 5% over the bytes the
// filesystem's own tools count as used.
func TestCaptureDeploy(t *testing.T) {
	needs.Root(t, "losetup")
	dir := t.TempDir()
	img := filepath.Join(dir, "lab.img")
	data := make([]byte, 1<<20)
	rand.Read(data)
	os.WriteFile(img, data, 0o644)
	for _, f := range []string{"vmlinuz", "initramfs"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	port := strconv.Itoa(testnet.FreePort(t))
	seedPort := testnet.FreePort(t)
	url := "http://127.0.0.1:" + port
	state := filepath.Join(dir, "state")
	srv := start(t, "serve", "--image", img, "--dhcp", "off", "--tftp-listen", "off", "--address", "127.0.0.1",
		"--http-listen", "127.0.0.1:"+port, "--seed-port", strconv.Itoa(seedPort), "--state-dir", state,
		"--kernel", filepath.Join(dir, "vmlinuz"), "--initramfs", filepath.Join(dir, "initramfs"))
	srv.waitFor(t, regexp.MustCompile(`pxeswarm serve: ready`), 30*time.Second)
	tokenFile := filepath.Join(state, "admin-token")

	for i, p := range []fsPart{ext4Part, fat32Part, ntfsPart} {
		t.Run(p.kind, func(t *testing.T) {
			src := fstest.RandomFile(t, p.kind+".img", p.size, uint64(i+1))
			v := p.make(t, src, fstest.NewFiles(t, p.files, p.maxFile), p.args...)
			used := v.Used(t, src)
			golden := loopDev(t, src)
			before := fstest.SHA256(t, golden)

			name := "golden-" + p.kind
			out, err := run(t, "capture", "--server", url, "--token-file", tokenFile, "--name", name, "--disk", golden, "--progress-every", "200ms")
			if err != nil {
				t.Fatalf("pxeswarm capture: %v\n%s", err, out)
			}
			if !regexp.MustCompile(`(?m)^capture: published ` + name + ` \(info-hash [0-9a-f]{40}\): sent \S+ of the \S+ disk in \d+ extents`).MatchString(out) {
				t.Errorf("capture printed no result line:\n%s", out)
			}
			st := captureState(t, url, name)
			t.Logf("%s: the server took in %d bytes for %d used (%.3f×) of a %d-byte disk", p.kind, st.BytesIn, used, float64(st.BytesIn)/float64(used), p.size)
			if st.BytesIn < used || st.BytesIn > used+used/20 || st.BytesIn != st.Total {
				t.Errorf("%s: the server took in %d bytes (stream %d), want the %d the filesystem uses, at most 5%% more", p.kind, st.BytesIn, st.Total, used)
			}
			if after := fstest.SHA256(t, golden); after != before {
				t.Errorf("the golden device changed: sha256 %s, before %s", after, before)
			}

			// Deploy the image as published, onto another device.
			target := loopDev(t, fstest.RandomFile(t, "target.img", p.size, uint64(100+i)))
			f := start(t, "fetch", "--torrent", url+"/torrents/"+name+".torrent", "--target", target,
				"--listen", peerListen(), "--peer", fmt.Sprintf("127.0.0.1:%d", seedPort+i+1), "--progress-every", "200ms")
			if err := f.wait(t, 2*time.Minute); err != nil {
				t.Fatalf("fetch of the captured image: %v\n%s", err, f.output())
			}
			v.Check(t, target)
		})
	}

	// Over PXE: the task is made and the capture waits open for the
	// machine (which an agent test and the QEMU test carry out).
	out, err := run(t, "capture", "--server", url, "--token-file", tokenFile, "--name", "pxe-golden", "--mac", "52:54:00:00:00:99", "--target", "sda", "--wait=false")
	m := regexp.MustCompile(`capture: task (t\d+) created for 52:54:00:00:00:99 \(capture (c-[0-9a-f]{16})\): PXE-boot`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("capture --mac: %v\n%s", err, out)
	}
	resp, err := http.Get(url + "/api/captures/" + m[2])
	if err != nil {
		t.Fatal(err)
	}
	var st protocol.CaptureState
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.State != protocol.CaptureOpen || st.MAC != "52:54:00:00:00:99" || st.Name != "pxe-golden" {
		t.Errorf("capture %s = %+v, want open for the machine", m[2], st)
	}
	if out, err := run(t, "capture", "--server", url, "--token-file", tokenFile, "--name", "pxe-golden", "--mac", "52:54:00:00:00:99"); err == nil || !strings.Contains(out, "has task "+m[1]) {
		t.Errorf("a second capture task for the machine: %v\n%s; want refused naming %s", err, out, m[1])
	}
}

// captureState finds the published capture of image name in the read API.
func captureState(t *testing.T, url, name string) protocol.CaptureState {
	t.Helper()
	resp, err := http.Get(url + "/api/captures")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sts []protocol.CaptureState
	if err := json.NewDecoder(resp.Body).Decode(&sts); err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Image == name && st.State == protocol.CapturePublished {
			return st
		}
	}
	t.Fatalf("no published capture %s in GET /api/captures: %+v", name, sts)
	return protocol.CaptureState{}
}

// TestCaptureHelp: --help teaches the flags, the refusals and versions.
func TestCaptureHelp(t *testing.T) {
	out, _ := run(t, "capture", "-h")
	for _, want := range []string{"--server", "--token-file", "--name", "--disk", "--raw", "--force", "read-only", "hibernated", "BitLocker", "NAME-v2", "resumed", "--mac", "PXE-boot", "--target"} {
		if !strings.Contains(out, want) {
			t.Errorf("capture -h lacks %q:\n%s", want, out)
		}
	}
	if out, err := run(t, "capture", "--server", "http://127.0.0.1:1"); err == nil || !strings.Contains(out, "need --server, --token-file, --name and --disk") {
		t.Errorf("capture without --disk: %v %q", err, out)
	}
}
