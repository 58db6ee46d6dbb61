package usedmap

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// newNTFS makes an empty NTFS image over random bytes.
func newNTFS(t *testing.T, size int64, args ...string) string {
	t.Helper()
	img := fstest.RandomFile(t, "ntfs.img", size, 0)
	fstest.Run(t, "mkntfs", append(append([]string{"-F", "-Q", "-q"}, args...), img)...)
	return img
}

// TestNTFS makes real NTFS volumes (cluster sizes around the MFT record
// size: 512 B, 4 KiB, 64 KiB), copies files in with ntfscp, shrinks some
// (freeing their clusters) and copies more into the holes, and checks
// the map against ntfsinfo's free cluster count and, cluster by cluster,
// against the data ntfsclone copies. Then it keeps only the mapped bytes:
// ntfsfix -n must pass and ntfscat must read every file back identical.
func TestNTFS(t *testing.T) {
	needs.Tool(t, "mkntfs", "ntfscp", "ntfscat", "ntfsinfo", "ntfsfix", "ntfsclone")
	files := fstest.NewFiles(t, 24, 300<<10)
	for _, tc := range []struct {
		name string
		size int64
		args []string
	}{
		{"cluster-512", 24 << 20, []string{"-c", "512"}},
		{"cluster-4k", 32 << 20, nil},
		{"cluster-64k", 64 << 20, []string{"-c", "65536"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := fstest.MakeNTFS(t, fstest.RandomFile(t, "ntfs.img", tc.size, 0), files, tc.args...)
			img := v.Path
			m := detectFile(t, img)
			if m.Kind != NTFS {
				t.Errorf("Kind = %s, want %s", m.Kind, NTFS)
			}
			info := fstest.Run(t, "ntfsinfo", "-m", img)
			field := func(re string) int64 {
				s := regexp.MustCompile(re).FindStringSubmatch(info)
				if s == nil {
					t.Fatalf("ntfsinfo -m has no %s", re)
				}
				n, _ := strconv.ParseInt(s[1], 10, 64)
				return n
			}
			cluster, clusters, free := field(`Cluster Size: (\d+)`), field(`Volume Size in Clusters: (\d+)`), field(`Free Clusters: (\d+)`)
			ours := unitsOf(t, m, 0, cluster, clusters)
			if int64(ours.count()) != clusters-free {
				t.Errorf("clusters in use: ours %d, ntfsinfo %d", ours.count(), clusters-free)
			}
			checkNTFSClone(t, img, m, cluster, clusters)

			v.Check(t, usedOnly(t, img, m))
		})
	}
}

// checkNTFSClone compares the map with what ntfsclone copies: it writes
// the clusters $Bitmap marks used and leaves holes for the rest. Holes in
// the test folder's filesystem are whole blocks (4 KiB here), so the two
// are compared in units of max(cluster, 4 KiB): a unit is used if any of
// its clusters is. Where the clone has no holes at all (a filesystem
// without them), it says so and compares nothing.
func checkNTFSClone(t *testing.T, img string, m Map, cluster, clusters int64) {
	t.Helper()
	clone := filepath.Join(t.TempDir(), "clone.img")
	fstest.Run(t, "ntfsclone", "-f", "-o", clone, img)
	f, err := os.Open(clone)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := max(cluster, 4096)
	end := clusters * cluster
	units := (end + unit - 1) / unit
	data := make(bitset, units)
	const seekData, seekHole = 3, 4
	holes := false
	for off := int64(0); off < end; {
		d, err := f.Seek(off, seekData)
		if err != nil || d >= end {
			break // no data past off
		}
		h, err := f.Seek(d, seekHole)
		if err != nil {
			t.Fatal(err)
		}
		if d > 0 || h < end {
			holes = true
		}
		for u := d / unit; u < min(units, (h+unit-1)/unit); u++ {
			data[u] = true
		}
		off = h
	}
	if !holes {
		t.Logf("the test folder's filesystem keeps no holes: ntfsclone's copy not compared")
		return
	}
	ours := make(bitset, units)
	for u := range units {
		// (the last unit also holds the backup boot sector, after the volume)
		for off := u * unit; off < min(m.Size, (u+1)*unit); off += min(cluster, 512) {
			if m.Contains(off, 1) {
				ours[u] = true
			}
		}
	}
	if d := ours.diff(data); d != "" {
		t.Errorf("used %d-byte units: ours %d, ntfsclone %d; they differ at units%s", unit, ours.count(), data.count(), d)
	}
}

// TestNTFSRefused: a volume Windows left hibernated (hiberfil.sys
// starting with "hibr" or "HIBR"), one marked dirty, and a BitLocker
// volume are refused with errors that say what to do; ntfs-3g agrees
// about the first two. A hiberfil.sys that is not a hibernation image,
// and a dirty flag cleared with ntfsfix -d, are fine.
func TestNTFSRefused(t *testing.T) {
	needs.Tool(t, "mkntfs", "ntfscp", "ntfsinfo", "ntfsfix")
	detect := func(img string) error {
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		_, err = Detect(f, fi.Size())
		return err
	}
	hiber := func(t *testing.T, head string) string {
		img := newNTFS(t, 16<<20)
		fstest.Hibernate(t, img, head)
		return img
	}
	for _, head := range []string{"hibr", "HIBR"} {
		t.Run("hiberfil-"+head, func(t *testing.T) {
			img := hiber(t, head)
			err := detect(img)
			if !errors.Is(err, ErrHibernated) || !strings.Contains(err.Error(), "shutdown /s /f /t 0") {
				t.Errorf("Detect(hibernated) = %v, want ErrHibernated saying what to do", err)
			}
			// ntfs-3g refuses it read-write too.
			out, err := exec.Command("ntfsfix", img).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "hibernated") {
				t.Errorf("ntfsfix on our hibernated volume: %v\n%s", err, out)
			}
		})
	}
	t.Run("hiberfil-wake", func(t *testing.T) {
		if err := detect(hiber(t, "wake")); err != nil {
			t.Errorf("Detect(hiberfil.sys not hibernated) = %v, want no error", err)
		}
	})
	t.Run("dirty", func(t *testing.T) {
		img := newNTFS(t, 16<<20)
		// ntfsfix sets the dirty flag so that Windows runs chkdsk.
		fstest.Run(t, "ntfsfix", img)
		if info := fstest.Run(t, "ntfsinfo", "-f", "-m", img); !strings.Contains(info, "Volume Flags: 0x0001 DIRTY") {
			t.Fatalf("ntfsfix did not mark the volume dirty:\n%s", info)
		}
		err := detect(img)
		if !errors.Is(err, ErrDirty) || !strings.Contains(err.Error(), "chkdsk") {
			t.Errorf("Detect(dirty) = %v, want ErrDirty saying what to do", err)
		}
		fstest.Run(t, "ntfsfix", "-d", img)
		if err := detect(img); err != nil {
			t.Errorf("Detect(after ntfsfix -d) = %v, want no error", err)
		}
	})
	t.Run("bitlocker", func(t *testing.T) {
		img := newNTFS(t, 16<<20)
		fstest.BitLocker(t, img)
		err := detect(img)
		if !errors.Is(err, ErrBitLocker) || !strings.Contains(err.Error(), "manage-bde -off") {
			t.Errorf("Detect(BitLocker) = %v, want ErrBitLocker saying what to do", err)
		}
	})
}
