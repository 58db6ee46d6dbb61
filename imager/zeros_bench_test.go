//go:build linux

package imager

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkZeroDetect measures what zero detection costs against plain
// hashing (--raw) on 1 GiB sources, side by side: for each source, the
// bytes read (rchar of /proc/self/io: what read calls returned; and
// read_bytes: what came from the disk), CPU and wall time, with the
// source's pages dropped from the cache before each run (cold) and with
// them cached (warm). It prints one line a run. Sources: zero-filled with 12 MiB of islands; the
// same as a sparse file; random bytes; random bytes with 1 MiB zero runs
// early on that hold under 1/32 of it (the worst case: both streams are
// hashed from the first run to the end).
//
//	go test -run=NONE -bench=ZeroDetect -benchtime=1x ./imager/
func BenchmarkZeroDetect(b *testing.B) {
	const size = 1 << 30
	dir := b.TempDir()
	var islands []island
	for i := range 12 {
		islands = append(islands, island{int64(i)*85*miB + 3*miB + int64(i)*4099, miB})
	}
	srcs := []struct{ name, path string }{
		{"zeroed+islands", filepath.Join(dir, "zeroed.img")},
		{"sparse+islands", filepath.Join(dir, "sparse.img")},
		{"random", filepath.Join(dir, "random.img")},
		{"random+few-zero-runs", filepath.Join(dir, "fewzeros.img")},
	}
	islandFile(b, srcs[0].path, size, islands, false, 1)
	islandFile(b, srcs[1].path, size, islands, true, 1)
	writeRandom(b, srcs[2].path, size, 2)
	writeRandom(b, srcs[3].path, size, 3)
	f, err := os.OpenFile(srcs[3].path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 24 { // 24 MiB of zero runs, under 32 MiB
		f.WriteAt(make([]byte, miB), int64(i+1)*8*miB)
	}
	f.Close()
	log := slog.New(slog.DiscardHandler)
	for b.Loop() {
		for _, s := range srcs {
			for _, warm := range []bool{false, true} {
				for _, raw := range []bool{true, false} {
					if !warm {
						dropCache(b, s.path)
					} else {
						Create(context.Background(), log, CreateConfig{Sources: []string{s.path}, Raw: true}) // fill the cache
					}
					io0, cpu0, t0 := procIO(b), cpuTime(b), time.Now()
					im, err := Create(context.Background(), log, CreateConfig{Sources: []string{s.path}, Raw: raw})
					if err != nil {
						b.Fatal(err)
					}
					el, cpu, io1 := time.Since(t0), cpuTime(b)-cpu0, procIO(b)
					mode, cache := "zero detection", "cold"
					if raw {
						mode = "plain (--raw)"
					}
					if warm {
						cache = "warm"
					}
					fmt.Printf("%-21s %-4s %-15s read %5d MiB (disk %5d MiB)  cpu %6.2fs  wall %6.2fs  torrent file %5d MiB, %d extents\n",
						s.name, cache, mode, (io1["rchar"]-io0["rchar"])>>20, (io1["read_bytes"]-io0["read_bytes"])>>20,
						cpu.Seconds(), el.Seconds(), im.Length>>20, len(im.Files[0].Part.Extents))
				}
			}
		}
	}
}

// dropCache writes back and drops the cached pages of the file at path
// (and no other file's).
func dropCache(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.Sync()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
}

// procIO reads this process's I/O counters.
func procIO(b *testing.B) map[string]int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^(\w+): (\d+)$`).FindAllStringSubmatch(string(raw), -1) {
		out[m[1]], _ = strconv.ParseInt(m[2], 10, 64)
	}
	return out
}
