// Package fstest is test plumbing, imported only by _test.go files. It
// builds real filesystem images (ext2/3/4, FAT12/16/32, NTFS) as files
// with the filesystems' own tools (mke2fs and debugfs, mkfs.vfat and
// mtools, mkntfs and ntfscp), over random bytes so that free space is
// never zero, holding random files of which some are deleted (or, on
// NTFS, shrunk) and new ones written into the holes, so files fragment.
// Then it checks a copy of such an image, wherever it ended up: the
// filesystem's own checker (e2fsck -fn, fsck.fat -n, ntfsfix -n) finds it
// clean and every file reads back (debugfs cat, mcopy, ntfscat) identical
// to what was written.
//
// It does not own which bytes a filesystem uses (package usedmap) or how
// images move (packages imager and partition): it is the reference the
// tests of those hold them to.
package fstest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// Run runs a command and returns its combined output; it fails t on a
// non-zero exit. mtools run with MTOOLS_SKIP_CHECK=1, so they take
// images of any geometry.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// RandomFile makes a file called name, in a new folder, of size random
// bytes drawn from seed: the ground a filesystem is made on, so that
// whatever it leaves unused is not zero, or a target whose old bytes must
// not matter. Different seeds give different bytes.
func RandomFile(t testing.TB, name string, size int64, seed uint64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writeRandom(t, f, 0, size, seed)
	return p
}

// Fill overwrites n bytes of the file at path, from off, with random bytes
// drawn from seed.
func Fill(t testing.TB, path string, off, n int64, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writeRandom(t, f, off, n, seed)
}

func writeRandom(t testing.TB, f *os.File, off, n int64, seed uint64) {
	t.Helper()
	key := [32]byte{7}
	for i := range 8 {
		key[1+i] = byte(seed >> (8 * i))
	}
	if _, err := io.CopyN(io.NewOffsetWriter(f, off), rand.NewChaCha8(key), n); err != nil {
		t.Fatal(err)
	}
}

// Files is a folder of files to put on a filesystem.
type Files struct {
	Dir   string
	Names []string // relative to Dir, "/"-separated; a third are in "sub/"
}

// NewFiles writes n files of random sizes below maxSize (random content)
// into a new folder, every third in the subfolder "sub" and every fifth
// tiny (under 100 bytes: ext4 inline data, NTFS resident data). The same
// n and maxSize give the same files. n is at least 8: the builders write
// the fourth and eighth again.
func NewFiles(t testing.TB, n, maxSize int) Files {
	t.Helper()
	if n < 8 {
		t.Fatalf("fstest.NewFiles(%d files): want at least 8", n)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(maxSize)))
	var names []string
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("f%02d.bin", i)
		if i%3 == 2 {
			name = "sub/" + name
		}
		size := rng.IntN(maxSize)
		if i%5 == 0 {
			size = rng.IntN(100)
		}
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return Files{Dir: dir, Names: names}
}

// Size is the bytes of all the files.
func (fs Files) Size(t testing.TB) int64 {
	t.Helper()
	var n int64
	for _, name := range fs.Names {
		st, err := os.Stat(filepath.Join(fs.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

func (fs Files) path(i int) string { return filepath.Join(fs.Dir, fs.Names[i]) }

// deleted says whether the builders delete (or shrink) file i after
// writing it: every fourth, from the second.
func deleted(i int) bool { return i%4 == 1 }

// Filesystem kinds of a [Volume].
const (
	Ext  = "ext"
	FAT  = "fat"
	NTFS = "ntfs"
)

// Volume is a filesystem image file and what it holds.
type Volume struct {
	Kind string // Ext, FAT or NTFS
	Path string // the image file
	// Want maps each file on the filesystem (the path its read-back tool
	// takes) to a host file with the bytes it must hold.
	Want map[string]string
}

// MakeExt makes an ext2/3/4 filesystem (mke2fs -d with args such as
// "-t", "ext4") on the image file img, which sets its size, with the
// files; then debugfs deletes every fourth file and writes two new ones,
// "late1" and "late2", into the holes. img holds a clean filesystem after.
func MakeExt(t testing.TB, img string, fs Files, args ...string) *Volume {
	t.Helper()
	needs.Tool(t, "mke2fs", "debugfs", "e2fsck", "dumpe2fs")
	Run(t, "mke2fs", append(append([]string{"-q", "-F", "-E", "nodiscard", "-d", fs.Dir}, args...), img)...)
	v := &Volume{Kind: Ext, Path: img, Want: map[string]string{}}
	cmds := ""
	for i, n := range fs.Names {
		if deleted(i) {
			cmds += "rm /" + n + "\n"
		} else {
			v.Want["/"+n] = fs.path(i)
		}
	}
	for _, late := range []struct {
		name string
		i    int
	}{{"/late1", 3}, {"/late2", 7}} {
		cmds += "write " + fs.path(late.i) + " " + late.name[1:] + "\n"
		v.Want[late.name] = fs.path(late.i)
	}
	cmdFile := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds), 0o644); err != nil {
		t.Fatal(err)
	}
	Run(t, "debugfs", "-w", "-f", cmdFile, img)
	Run(t, "e2fsck", "-fn", img)
	return v
}

// MakeFAT makes a FAT filesystem (mkfs.vfat with args such as "-F", "32")
// on the image file img, copies the files in with mcopy, deletes every
// fourth with mdel and copies two more, "/late1" and "/late2", into the
// holes.
func MakeFAT(t testing.TB, img string, fs Files, args ...string) *Volume {
	t.Helper()
	needs.Tool(t, "mkfs.vfat", "fsck.fat", "mcopy", "mmd", "mdel")
	Run(t, "mkfs.vfat", append(args, img)...)
	Run(t, "mmd", "-i", img, "::/sub")
	v := &Volume{Kind: FAT, Path: img, Want: map[string]string{}}
	for _, n := range fs.Names {
		Run(t, "mcopy", "-i", img, filepath.Join(fs.Dir, n), "::/"+n)
	}
	for i, n := range fs.Names {
		if deleted(i) {
			Run(t, "mdel", "-i", img, "::/"+n)
		} else {
			v.Want["/"+n] = fs.path(i)
		}
	}
	Run(t, "mcopy", "-i", img, fs.path(3), "::/late1")
	Run(t, "mcopy", "-i", img, fs.path(7), "::/late2")
	v.Want["/late1"], v.Want["/late2"] = fs.path(3), fs.path(7)
	Run(t, "fsck.fat", "-n", img)
	return v
}

// MakeNTFS makes an NTFS filesystem (mkntfs -F -Q with args such as "-c",
// "512") on the image file img and copies the files into its root with
// ntfscp ("sub/x" becomes "sub_x": ntfscp makes no folders). ntfs-3g has
// no tool that deletes a file from an image, so every fourth file is
// shrunk to one byte instead, which frees its clusters; then two more,
// "late1" and "late2", are copied into the holes.
func MakeNTFS(t testing.TB, img string, fs Files, args ...string) *Volume {
	t.Helper()
	needs.Tool(t, "mkntfs", "ntfscp", "ntfscat", "ntfsfix", "ntfsinfo")
	Run(t, "mkntfs", append(append([]string{"-F", "-Q", "-q"}, args...), img)...)
	one := filepath.Join(t.TempDir(), "one-byte")
	if err := os.WriteFile(one, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	v := &Volume{Kind: NTFS, Path: img, Want: map[string]string{}}
	flat := func(n string) string { return strings.ReplaceAll(n, "/", "_") }
	for i, n := range fs.Names {
		NTFSCopy(t, img, fs.path(i), flat(n))
	}
	for i, n := range fs.Names {
		if deleted(i) {
			NTFSCopy(t, img, one, flat(n))
			v.Want[flat(n)] = one
		} else {
			v.Want[flat(n)] = fs.path(i)
		}
	}
	NTFSCopy(t, img, fs.path(3), "late1")
	NTFSCopy(t, img, fs.path(7), "late2")
	v.Want["late1"], v.Want["late2"] = fs.path(3), fs.path(7)
	Run(t, "ntfsfix", "-n", img)
	return v
}

// NTFSCopy copies the host file src into the NTFS image img as name,
// overwriting a file of that name.
func NTFSCopy(t testing.TB, img, src, name string) {
	t.Helper()
	Run(t, "ntfscp", "-q", "-f", img, src, name)
}

// Hibernate makes the NTFS image img look as Windows leaves a volume it
// hibernated (Fast Startup): a hiberfil.sys that starts with head ("hibr"
// or "HIBR"; anything else is a hiberfil.sys not in use), after another
// root entry so the name is looked up, not the first entry taken.
func Hibernate(t testing.TB, img, head string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hiberfil.sys")
	if err := os.WriteFile(p, append([]byte(head), make([]byte, 64<<10)...), 0o644); err != nil {
		t.Fatal(err)
	}
	NTFSCopy(t, img, p, "aaa.txt")
	NTFSCopy(t, img, p, "hiberfil.sys")
}

// BitLocker makes the image img look like a BitLocker volume: its boot
// sector names "-FVE-FS-" as its OEM ID.
func BitLocker(t testing.TB, img string) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("-FVE-FS-"), 3); err != nil {
		t.Fatal(err)
	}
}

// Check checks a copy of v at img (a partition image, however it was
// made): the filesystem's own checker finds it clean, and every file
// reads back identical to what was written.
func (v *Volume) Check(t testing.TB, img string) {
	t.Helper()
	switch v.Kind {
	case Ext:
		Run(t, "e2fsck", "-fn", img)
	case FAT:
		Run(t, "fsck.fat", "-n", img)
	case NTFS:
		Run(t, "ntfsfix", "-n", img)
	}
	for name, want := range v.Want {
		SameFile(t, name, v.Cat(t, img, name), want)
	}
}

// Cat reads the file name out of the copy of v at img with the
// filesystem's own tool.
func (v *Volume) Cat(t testing.TB, img, name string) []byte {
	t.Helper()
	var cmd *exec.Cmd
	switch v.Kind {
	case Ext:
		cmd = exec.Command("debugfs", "-R", "cat "+name, img)
	case FAT:
		p := filepath.Join(t.TempDir(), "file")
		Run(t, "mcopy", "-n", "-i", img, "::"+name, p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case NTFS:
		cmd = exec.Command("ntfscat", img, name)
	default:
		t.Fatalf("fstest: unknown volume kind %q", v.Kind)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: read %s out of %s: %v\n%s", cmd.Args[0], name, img, err, stderr.Bytes())
	}
	return out
}

// Used is the bytes of the filesystem at img in use, as its own tools
// count them: blocks not free (dumpe2fs -h), the area before the first
// cluster and the clusters in use (fsck.fat -v), clusters not free
// (ntfsinfo -m).
func (v *Volume) Used(t testing.TB, img string) int64 {
	t.Helper()
	field := func(out, re string) int64 {
		t.Helper()
		s := regexp.MustCompile(re).FindStringSubmatch(out)
		if s == nil {
			t.Fatalf("no %s in:\n%s", re, out)
		}
		n, err := strconv.ParseInt(s[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	switch v.Kind {
	case Ext:
		out := Run(t, "dumpe2fs", "-h", img)
		return (field(out, `(?m)^Block count:\s+(\d+)`) - field(out, `(?m)^Free blocks:\s+(\d+)`)) * field(out, `(?m)^Block size:\s+(\d+)`)
	case FAT:
		out := Run(t, "fsck.fat", "-n", "-v", img)
		return field(out, `Data area starts at byte (\d+)`) + field(out, `files, (\d+)/\d+ clusters`)*field(out, `(\d+) bytes per cluster`)
	case NTFS:
		out := Run(t, "ntfsinfo", "-m", img)
		return (field(out, `Volume Size in Clusters: (\d+)`) - field(out, `Free Clusters: (\d+)`)) * field(out, `Cluster Size: (\d+)`)
	}
	t.Fatalf("fstest: unknown volume kind %q", v.Kind)
	return 0
}

// SameFile fails t unless got's bytes equal the file at want.
func SameFile(t testing.TB, what string, got []byte, want string) {
	t.Helper()
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, w) {
		t.Errorf("%s: read back %d bytes that differ from the %d written", what, len(got), len(w))
	}
}

// Open opens the file at path for reading until the test ends.
func Open(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// SameRange reports whether the n bytes of a at aOff equal those of b at
// bOff: that a target's free space holds what it held before, say.
func SameRange(t testing.TB, a *os.File, aOff int64, b *os.File, bOff, n int64) bool {
	t.Helper()
	x, y := make([]byte, n), make([]byte, n)
	if _, err := a.ReadAt(x, aOff); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadAt(y, bOff); err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// Extract copies size bytes at off of the file at path (a partition of a
// disk image) into a new file, for the tools that take no offset.
func Extract(t testing.TB, path string, off, size int64) string {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(t.TempDir(), fmt.Sprintf("%s@%d", filepath.Base(path), off))
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if n, err := io.Copy(out, io.NewSectionReader(in, off, size)); err != nil || n != size {
		t.Fatalf("extract %d bytes at %d of %s: copied %d: %v", size, off, path, n, err)
	}
	return p
}

// Loop attaches the file at path as a loop device (losetup, as root) and
// detaches it when the test ends; it returns the device's path.
func Loop(t testing.TB, path string) string {
	t.Helper()
	needs.Root(t, "losetup")
	needs.Tool(t, "losetup")
	out, err := exec.Command("losetup", "--find", "--show", path).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup --find --show %s: %v: %s (no loop devices in this container?)", path, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}
