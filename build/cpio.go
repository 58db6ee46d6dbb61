package build

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"
)

// archive is an initramfs being assembled in memory. Its bytes depend only
// on what was added: entries are written sorted by name (a directory
// before what it holds), with inode numbers counted in that order, mtime
// 0, uid and gid 0 (root), one link each.
type archive struct {
	recs map[string]cpio.Record
}

func newArchive() *archive { return &archive{recs: map[string]cpio.Record{}} }

// add adds r, and directories (0755) for its parents that are not there
// yet. Adding a name twice is an error unless both are the same directory.
func (a *archive) add(r cpio.Record) error {
	r.Name = cpio.Normalize(r.Name)
	if r.Name == "." || r.Name == "" || strings.HasPrefix(r.Name, "../") {
		return fmt.Errorf("initramfs: bad entry name %q", r.Name)
	}
	if old, ok := a.recs[r.Name]; ok {
		if old.Mode&cpio.S_IFMT == cpio.S_IFDIR && r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			return nil
		}
		return fmt.Errorf("initramfs: %s added twice", r.Name)
	}
	if dir := path.Dir(r.Name); dir != "." {
		if old, ok := a.recs[dir]; ok && old.Mode&cpio.S_IFMT != cpio.S_IFDIR {
			return fmt.Errorf("initramfs: %s needs %s to be a folder", r.Name, dir)
		} else if !ok {
			if err := a.add(cpio.Directory(dir, 0o755)); err != nil {
				return err
			}
		}
	}
	a.recs[r.Name] = r
	return nil
}

func (a *archive) dir(name string, perm uint64) error { return a.add(cpio.Directory(name, perm)) }

func (a *archive) file(name string, perm uint64, data []byte) error {
	return a.add(cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | perm}))
}

func (a *archive) symlink(name, target string) error { return a.add(cpio.Symlink(name, target)) }

func (a *archive) charDev(name string, perm, major, minor uint64) error {
	return a.add(cpio.CharDev(name, perm, major, minor))
}

// names lists the entries in the order they are written.
func (a *archive) names() []string {
	names := make([]string, 0, len(a.recs))
	for n := range a.recs {
		names = append(names, n)
	}
	// Plain byte order puts "a" before "a/b" and "a-b" (a prefix sorts
	// first), so every folder comes before its contents.
	sort.Strings(names)
	return names
}

// writeTo writes the archive in the newc format the kernel unpacks
// (Documentation/driver-api/early-userspace/buffer-format.rst).
func (a *archive) writeTo(w io.Writer) error {
	cw := cpio.Newc.Writer(w)
	for i, n := range a.names() {
		r := cpio.MakeReproducible(a.recs[n])
		r.Ino = uint64(i + 1)
		r.NLink = 1
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			r.NLink = 2
		}
		if err := cw.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", n, err)
		}
	}
	return cpio.WriteTrailer(cw)
}

// Compression formats for the initramfs.
const (
	CompressAuto = "auto" // xz when the kernel can unpack it, else gzip
	CompressXZ   = "xz"
	CompressGzip = "gzip"
)

// ErrCompression means the kernel cannot unpack the asked-for compression.
var ErrCompression = errors.New("initramfs compression not supported by the kernel")

// compress writes raw compressed as format. Both encoders are pure Go and
// write the same bytes for the same input: gzip with no name and no mtime
// in its header, xz with a CRC32 check (the kernel's XZ decoder, used for
// initramfs, checks CRC32 but not the CRC64 that xz(1) writes by default;
// see Documentation/staging/xz.rst) and LZMA2 only.
func compress(w io.Writer, raw []byte, format string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	switch format {
	case CompressGzip:
		gz, err := gzip.NewWriterLevel(bw, gzip.BestCompression)
		if err != nil {
			return err
		}
		if _, err := gz.Write(raw); err != nil {
			return err
		}
		if err := gz.Close(); err != nil {
			return err
		}
	case CompressXZ:
		cfg := xz.WriterConfig{CheckSum: xz.CRC32, DictCap: 8 << 20}
		xw, err := cfg.NewWriter(bw)
		if err != nil {
			return err
		}
		if _, err := io.Copy(xw, bytes.NewReader(raw)); err != nil {
			return err
		}
		if err := xw.Close(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("initramfs: unknown compression %q: use %s or %s", format, CompressXZ, CompressGzip)
	}
	return bw.Flush()
}

// pickCompression applies the kernel's config (CONFIG_RD_XZ,
// CONFIG_RD_GZIP) to the asked-for format. cfg is nil when the config is
// unknown; then auto means gzip, which every kernel with initramfs support
// unpacks.
func pickCompression(want string, cfg map[string]string) (string, error) {
	has := func(opt string) bool { return cfg == nil || cfg[opt] == "y" }
	switch want {
	case "", CompressAuto:
		if cfg != nil && cfg["CONFIG_RD_XZ"] == "y" {
			return CompressXZ, nil
		}
		return CompressGzip, nil
	case CompressXZ:
		if !has("CONFIG_RD_XZ") {
			return "", fmt.Errorf("%w: %s needs CONFIG_RD_XZ=y: use --compress gzip", ErrCompression, want)
		}
		return want, nil
	case CompressGzip:
		if !has("CONFIG_RD_GZIP") {
			return "", fmt.Errorf("%w: %s needs CONFIG_RD_GZIP=y: use --compress xz", ErrCompression, want)
		}
		return want, nil
	}
	return "", fmt.Errorf("initramfs: unknown compression %q: use %s, %s or %s", want, CompressAuto, CompressXZ, CompressGzip)
}
