package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// The read cost of mktorrent: how many bytes `pxeswarm mktorrent` reads
// to make the used-block torrent of a large, mostly empty partition. The
// partition is a sparse file of --cost-size (256 GB, as in issue 16)
// holding an ext4 that mke2fs -d filled with --cost-fill of random files
// (scaled down from the 40 GB to spare a shared disk). The
// counters are the kernel's for the mktorrent process (/proc/PID/io, read
// while it is a zombie, before it is reaped): rchar, every byte its read
// calls returned (page cache and sparse holes included), and read_bytes,
// what it made the kernel fetch from storage (the image's pages are
// dropped from the cache first).

type readCost struct {
	size, fill       int64
	used             int64 // what usedmap counts: files and metadata
	extents          int
	allocated        int64 // the image file's blocks on the host's disk
	rchar, readBytes int64
	took             time.Duration
	said             string // mktorrent's "part …" line
}

func measureReadCost(bin, work string, size, fill int64) (*readCost, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(work, &st); err != nil {
		return nil, err
	}
	if free := int64(st.Bavail) * st.Bsize; free < 2*fill+(2<<30) {
		return nil, fmt.Errorf("mktorrent read cost: %s has %s free, it needs twice --cost-fill (%s) and 2 GiB: free some space or lower --cost-fill",
			work, bytesize.Format(free), bytesize.Format(fill))
	}
	dir, err := os.MkdirTemp(work, "readcost")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files := filepath.Join(dir, "files")
	if _, err := writeFiles(rand.NewChaCha8([32]byte{'r', 'c'}), files, "f", fill, 64<<10, 64<<20); err != nil {
		return nil, fmt.Errorf("mktorrent read cost: write the files: %w", err)
	}
	img := filepath.Join(dir, "part.img")
	if err := mkfs("ext4", img, size, files); err != nil {
		return nil, fmt.Errorf("mktorrent read cost: %w", err)
	}
	os.RemoveAll(files)
	m, err := usedMapOf(img)
	if err != nil {
		return nil, err
	}
	rc := &readCost{size: size, fill: fill, used: m.Used(), extents: len(m.Extents)}
	if err := dropCache(img); err != nil {
		return nil, err
	}
	var fst unix.Stat_t
	if err := unix.Stat(img, &fst); err != nil {
		return nil, err
	}
	rc.allocated = fst.Blocks * 512

	cmd := exec.Command(bin, "mktorrent", "-o", filepath.Join(dir, "part.torrent"), img)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Wait for the exit without reaping, so /proc/PID/io still holds the
	// whole run's counters.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("wait for mktorrent: %w", err)
	}
	rc.took = time.Since(t0)
	io, ioErr := os.ReadFile(fmt.Sprintf("/proc/%d/io", cmd.Process.Pid))
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("mktorrent: %v: %s", err, out.Bytes())
	}
	if ioErr != nil {
		return nil, fmt.Errorf("read mktorrent's I/O counters: %w", ioErr)
	}
	sc := bufio.NewScanner(bytes.NewReader(io))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		switch k {
		case "rchar":
			fmt.Sscan(v, &rc.rchar)
		case "read_bytes":
			fmt.Sscan(v, &rc.readBytes)
		}
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "part ") {
			rc.said = strings.TrimSpace(l)
		}
	}
	if rc.rchar == 0 {
		return nil, fmt.Errorf("mktorrent's /proc/PID/io had no rchar: %s", io)
	}
	return rc, nil
}

// dropCache writes the file back and drops its pages from the page cache.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

func (rc *readCost) markdown() string {
	ratio := float64(rc.rchar) / float64(rc.used)
	verdict := fmt.Sprintf("It read %.2f× the used bytes: about what it ships, not the partition (%.4f× of it): the hashing reads each used extent once and the used map reads only metadata.", ratio, float64(rc.rchar)/float64(rc.size))
	if ratio > 1.05 {
		verdict = fmt.Sprintf("It read %.2f× the used bytes, more than it ships (%.4f× of the partition).", ratio, float64(rc.rchar)/float64(rc.size))
	}
	holes := ""
	if rc.allocated < rc.used {
		holes = fmt.Sprintf(" The image file holds only %s on the host's disk, less than the used map: the inode tables of a fresh ext4 are never written (lazy init), so they are holes that cost read calls (rchar) but no storage reads (read_bytes).", bytesize.Format(rc.allocated))
	}
	return fmt.Sprintf(`
## What mktorrent reads

`+"`pxeswarm mktorrent`"+` of a %.0f GB ext4 partition (a sparse file, `+"`mke2fs -t ext4 -b 4096 -d`"+`
with %s of random files: scaled down from the issue's 256 GB with 40 GB used,
to spare a shared disk), the image's pages dropped from the page cache
first. The used map counts %s (%.2f%% of the partition, %d extents: the
files and the metadata, inode tables and journal included). Counters of
the mktorrent process from /proc/PID/io, read once it had exited:

| partition | used | read calls returned (rchar) | from storage (read_bytes) | rchar / used | time |
| ---: | ---: | ---: | ---: | ---: | ---: |
| %s | %s | %s | %s | **%.3f** | %.1f s |

mktorrent said: `+"`%s`"+`. %s%s
`, float64(rc.size)/1e9, bytesize.Format(rc.fill), bytesize.Format(rc.used), 100*float64(rc.used)/float64(rc.size), rc.extents,
		bytesize.Format(rc.size), bytesize.Format(rc.used), bytesize.Format(rc.rchar), bytesize.Format(rc.readBytes),
		ratio, rc.took.Seconds(), rc.said, verdict, holes)
}
