package qemu

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// InitMarker is printed by the stand-in init (internal/qemu/markerinit).
const InitMarker = "pxeswarm-test: initramfs running"

// BuildMarkerInitramfs builds internal/qemu/markerinit as /init into a
// gzipped newc initramfs in dir and returns its path. It proves a machine
// ran our initramfs without needing the real agent.
func BuildMarkerInitramfs(ctx context.Context, dir string) (string, error) {
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "markerinit")
	bin := filepath.Join(dir, "markerinit")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build markerinit: %w: %s", err, out)
	}
	init, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var raw bytes.Buffer
	w := newcWriter{w: &raw}
	w.dir("dev")
	w.dir("proc")
	w.file("init", 0o755, init)
	w.trailer()
	out := filepath.Join(dir, "marker-initramfs.cpio.gz")
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	gz, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if _, err := gz.Write(raw.Bytes()); err != nil {
		f.Close()
		return "", err
	}
	if err := gz.Close(); err != nil {
		f.Close()
		return "", err
	}
	return out, f.Close()
}

// newcWriter writes the "newc" cpio format the kernel unpacks as an
// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
type newcWriter struct {
	w   *bytes.Buffer
	ino int
}

func (n *newcWriter) entry(name string, mode uint32, data []byte) {
	n.ino++
	fmt.Fprintf(n.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		n.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	n.w.WriteString(name)
	n.w.WriteByte(0)
	n.pad()
	n.w.Write(data)
	n.pad()
}

func (n *newcWriter) pad() {
	for n.w.Len()%4 != 0 {
		n.w.WriteByte(0)
	}
}

func (n *newcWriter) dir(name string)                         { n.entry(name, 0o040755, nil) }
func (n *newcWriter) file(name string, perm uint32, b []byte) { n.entry(name, 0o100000|perm, b) }
func (n *newcWriter) trailer()                                { n.entry("TRAILER!!!", 0, nil) }
