package main

import (
	"bytes"
	"crypto/sha1"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pxeswarm/pxeswarm/usedmap"
)

// Filesystem images: a partition of size S holding an ext4 or NTFS made
// with real files, about a given share of it used, fragmented the way a
// used disk is: files written, every other one deleted (ext4, debugfs rm)
// or truncated to nothing (NTFS, ntfstruncate), then larger files written
// into the holes they left. Nothing is mounted: mke2fs -d and debugfs
// write ext4, mkntfs and ntfscp write NTFS.

// fsTools are the programs the filesystem scenarios run, by package.
var fsTools = map[string]string{
	"mke2fs": "e2fsprogs", "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs",
	"mkntfs": "ntfs-3g", "ntfscp": "ntfs-3g", "ntfsls": "ntfs-3g", "ntfstruncate": "ntfs-3g", "ntfsfix": "ntfs-3g",
}

// makeFSImage writes a size-byte partition image at path holding kind
// ("ext4" or "ntfs") with about usedPct percent of it used, as usedmap
// counts (metadata included), and returns its used map.
func makeFSImage(dir, path, kind string, size int64, usedPct int) (usedmap.Map, error) {
	// What the empty filesystem uses (journal, inode tables, $MFT,
	// $LogFile) counts towards the share; the files fill the rest.
	if err := mkfs(kind, path, size, ""); err != nil {
		return usedmap.Map{}, err
	}
	empty, err := usedMapOf(path)
	if err != nil {
		return usedmap.Map{}, err
	}
	fill := size*int64(usedPct)/100 - empty.Used()
	if fill < 1<<20 {
		return usedmap.Map{}, fmt.Errorf("%s of %d MiB: its metadata alone uses %d MiB, more than %d%%: pick a larger --fs-size or --fs-used",
			kind, size>>20, empty.Used()>>20, usedPct)
	}
	rnd := rand.NewChaCha8([32]byte{byte(len(kind)), byte(usedPct)})
	// Round one: files summing to 4/3 of fill, log-uniform from 4 KiB to
	// 1 MiB; every other one goes (about a third of fill) and round two
	// puts back half of that, so what is left is about fill, with holes.
	first := filepath.Join(dir, "first")
	firstFiles, err := writeFiles(rnd, first, "a", fill*4/3, 4<<10, 1<<20)
	if err != nil {
		return usedmap.Map{}, err
	}
	var gone int64
	var deleted []string
	for i, f := range firstFiles {
		if i%2 == 0 {
			deleted = append(deleted, f.name)
			gone += f.size
		}
	}
	// Round two: larger files, half of what round one freed, so each
	// spreads over several holes and some holes stay free.
	second := filepath.Join(dir, "second")
	secondFiles, err := writeFiles(rnd, second, "b", max(fill-(fill*4/3-gone), 1<<20), 256<<10, 4<<20)
	if err != nil {
		return usedmap.Map{}, err
	}
	switch kind {
	case "ext4":
		if err := mkfs(kind, path, size, first); err != nil {
			return usedmap.Map{}, err
		}
		var script strings.Builder
		for _, name := range deleted {
			fmt.Fprintf(&script, "rm %s\n", name)
		}
		for _, f := range secondFiles {
			fmt.Fprintf(&script, "write %s %s\n", filepath.Join(second, f.name), f.name)
		}
		cmd := exec.Command("debugfs", "-w", "-f", "-", path)
		cmd.Stdin = strings.NewReader(script.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			return usedmap.Map{}, fmt.Errorf("debugfs: %v: %s", err, out)
		}
		if out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput(); err != nil {
			return usedmap.Map{}, fmt.Errorf("the bench's ext4 image does not check clean: %v: %s", err, out)
		}
	case "ntfs":
		for _, f := range firstFiles {
			if err := tool("ntfscp", "-q", path, filepath.Join(first, f.name), f.name); err != nil {
				return usedmap.Map{}, err
			}
		}
		inodes, err := ntfsInodes(path)
		if err != nil {
			return usedmap.Map{}, err
		}
		for _, name := range deleted {
			if err := tool("ntfstruncate", "-q", path, inodes[name], "0"); err != nil {
				return usedmap.Map{}, err
			}
		}
		// Half of round two overwrites the emptied files, half are new.
		for i, f := range secondFiles {
			dest := f.name
			if i%2 == 0 && i/2 < len(deleted) {
				dest = deleted[i/2]
			}
			if err := tool("ntfscp", "-q", path, filepath.Join(second, f.name), dest); err != nil {
				return usedmap.Map{}, err
			}
		}
		if err := tool("ntfsfix", "-n", path); err != nil {
			return usedmap.Map{}, fmt.Errorf("the bench's NTFS image does not check clean: %w", err)
		}
	}
	os.RemoveAll(first)
	os.RemoveAll(second)
	return usedMapOf(path)
}

func tool(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// mkfs makes an empty filesystem of kind on a fresh size-byte file at
// path; for ext4, with the files of dir (mke2fs -d) when dir is set.
func mkfs(kind, path string, size int64, dir string) error {
	os.Remove(path)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(path, size); err != nil {
		return err
	}
	switch kind {
	case "ext4":
		// 4 KiB blocks as on any real partition (mke2fs picks 1 KiB below
		// 512 MiB).
		args := []string{"-q", "-F", "-t", "ext4", "-b", "4096"}
		if dir != "" {
			args = append(args, "-d", dir)
		}
		return tool("mke2fs", append(args, path)...)
	case "ntfs":
		return tool("mkntfs", "-q", "-F", "-Q", path)
	}
	return fmt.Errorf("filesystem %q: want ext4 or ntfs", kind)
}

func usedMapOf(path string) (usedmap.Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return usedmap.Map{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return usedmap.Map{}, err
	}
	return usedmap.Detect(f, st.Size())
}

type benchFile struct {
	name string
	size int64
}

// writeFiles writes random files under dir, named prefix0, prefix1 …,
// sizes log-uniform in [lo, hi], until they hold total bytes.
func writeFiles(src *rand.ChaCha8, dir, prefix string, total, lo, hi int64) ([]benchFile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rnd := rand.New(src)
	var out []benchFile
	buf := make([]byte, 1<<20)
	for left := total; left > 0; {
		r := float64(lo) * math.Pow(float64(hi)/float64(lo), rnd.Float64())
		n := min(left, int64(r)&^511+512)
		f := benchFile{name: fmt.Sprintf("%s%d", prefix, len(out)), size: n}
		w, err := os.Create(filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		for k := n; k > 0; {
			c := min(k, int64(len(buf)))
			src.Read(buf[:c])
			if _, err := w.Write(buf[:c]); err != nil {
				w.Close()
				return nil, err
			}
			k -= c
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		out = append(out, f)
		left -= n
	}
	return out, nil
}

// ntfsInodes maps the root directory's file names to their inode numbers.
func ntfsInodes(path string) (map[string]string, error) {
	out, err := exec.Command("ntfsls", "-i", path).Output()
	if err != nil {
		return nil, fmt.Errorf("ntfsls -i %s: %w", path, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			m[f[1]] = f[0]
		}
	}
	return m, nil
}

// usedSHA1 hashes the bytes of path inside exts, in order.
func usedSHA1(path string, exts []usedmap.Extent) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New()
	for _, e := range exts {
		if _, err := io.Copy(h, io.NewSectionReader(f, e.Off, e.Len)); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// differingSectors returns the 512-byte sectors, merged into ranges,
// inside exts where a and b differ.
func differingSectors(a, b string, exts []usedmap.Extent) ([]usedmap.Extent, error) {
	fa, err := os.Open(a)
	if err != nil {
		return nil, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return nil, err
	}
	defer fb.Close()
	var out []usedmap.Extent
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, e := range exts {
		for off := e.Off; off < e.End(); {
			n := int(min(int64(len(ba)), e.End()-off))
			if _, err := fa.ReadAt(ba[:n], off); err != nil {
				return nil, err
			}
			if _, err := fb.ReadAt(bb[:n], off); err != nil && err != io.EOF {
				return nil, err
			}
			for i := 0; i < n; i += 512 {
				j := min(i+512, n)
				if bytes.Equal(ba[i:j], bb[i:j]) {
					continue
				}
				at := off + int64(i)
				if k := len(out) - 1; k >= 0 && out[k].End() == at {
					out[k].Len += int64(j - i)
				} else {
					out = append(out, usedmap.Extent{Off: at, Len: int64(j - i)})
				}
			}
			off += int64(n)
		}
	}
	return out, nil
}
