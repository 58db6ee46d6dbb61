package pxe

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pin/tftp/v3"

	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestTFTPWithTFTPHPA downloads the iPXE binary with the real tftp-hpa
// client (blksize and tsize options on) and checks it byte for byte, then
// tries path traversal.
func TestTFTPWithTFTPHPA(t *testing.T) {
	needs.Tool(t, "tftp")
	root := t.TempDir()
	src := DefaultTFTPRoot + "/undionly.kpxe"
	want, err := os.ReadFile(src)
	if err != nil {
		want = bytes.Repeat([]byte("not the real iPXE, but 100 KiB of it"), 3000)
		t.Logf("%s missing (apt-get install ipxe); serving a stand-in of %d bytes", src, len(want))
	}
	os.WriteFile(filepath.Join(root, "undionly.kpxe"), want, 0o644)
	secret := filepath.Join(filepath.Dir(root), "secret")
	os.WriteFile(secret, []byte("must not leak"), 0o644)
	// A link the admin put there before start is served (Debian links
	// ipxe.efi to /boot/ipxe.efi); one that appears later is not.
	outside := filepath.Join(t.TempDir(), "fw.efi")
	fw := bytes.Repeat([]byte("firmware "), 5000)
	os.WriteFile(outside, fw, 0o644)
	os.Symlink(outside, filepath.Join(root, "fw.efi"))

	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- TFTPConfig{Root: root}.Serve(ctx, testlog.New(t), conn)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after cancel", err)
		}
	}()
	port := conn.LocalAddr().(*net.UDPAddr).Port

	get := func(remote, local string) (string, error) {
		cmd := exec.Command("tftp", "-m", "binary", "127.0.0.1", strconv.Itoa(port), "-v", "-c", "get", remote, local)
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out := filepath.Join(t.TempDir(), "got")
	if res, err := get("undionly.kpxe", out); err != nil {
		t.Fatalf("tftp get: %v: %s", err, res)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Errorf("downloaded %d bytes, want %d identical bytes", len(got), len(want))
	}
	if res, err := get("fw.efi", out); err != nil {
		t.Fatalf("tftp get fw.efi (a link made before start): %v: %s", err, res)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, fw) {
		t.Errorf("fw.efi: downloaded %d bytes, want %d identical bytes", len(got), len(fw))
	}
	// The server is up (it answered), so it scanned the root before this.
	os.Symlink(secret, filepath.Join(root, "link"))
	for _, bad := range []string{"../secret", "/../secret", "..\\secret", "link", "/etc/passwd", "nope"} {
		dst := filepath.Join(t.TempDir(), "bad")
		res, _ := get(bad, dst)
		if b, _ := os.ReadFile(dst); len(b) > 0 {
			t.Errorf("tftp get %q returned %q (%s)", bad, b, res)
		}
		if !strings.Contains(strings.ToLower(res), "error") {
			t.Errorf("tftp get %q: no error reported: %s", bad, res)
		}
	}
}

// TestTFTPOptions: blksize (RFC 2348) and tsize (RFC 2349), as PXE ROMs
// request them, through pin/tftp's client.
func TestTFTPOptions(t *testing.T) {
	root := t.TempDir()
	want := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160000 bytes
	os.WriteFile(filepath.Join(root, "ipxe.efi"), want, 0o644)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- TFTPConfig{Root: root}.Serve(ctx, nil, conn) }()
	defer func() { cancel(); <-done }()
	c, err := tftp.NewClient(conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetBlockSize(1468)
	c.RequestTSize(true)
	wt, err := c.Receive("/ipxe.efi", "octet")
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := wt.(tftp.IncomingTransfer).Size(); !ok || n != int64(len(want)) {
		t.Errorf("tsize = %d, %v; want %d", n, ok, len(want))
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("got %d bytes, want %d identical", got.Len(), len(want))
	}
	// Writes are refused.
	if rf, err := c.Send("evil", "octet"); err == nil {
		if _, err := rf.ReadFrom(strings.NewReader("x")); err == nil {
			t.Errorf("a write was accepted")
		}
	}
	if _, err := os.Stat(filepath.Join(root, "evil")); err == nil {
		t.Errorf("a file was written into the TFTP root")
	}
}
