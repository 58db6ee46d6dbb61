package imager

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// BenchmarkHashVsSha1sum hashes the same 1 GiB file with `pxeswarm
// mktorrent`'s hasher (Create, all cores) and with coreutils `sha1sum`
// (one core), alternating in each iteration, and reports the throughput
// ratio. The file is read once first so both run from the page cache.
//
//	go test -run=NONE -bench=HashVsSha1sum -benchtime=3x ./imager/
func BenchmarkHashVsSha1sum(b *testing.B) {
	needs.Tool(b, "sha1sum")
	size := int64(1 << 30)
	if testing.Short() {
		size = 256 << 20
	}
	path := filepath.Join(b.TempDir(), "1g.img")
	writeRandom(b, path, size, 7)
	f, _ := os.Open(path)
	io.Copy(io.Discard, f) // warm the page cache for both
	f.Close()
	log := slog.New(slog.DiscardHandler)
	var ours, theirs time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if out, err := exec.Command("sha1sum", path).CombinedOutput(); err != nil {
			b.Fatalf("sha1sum: %v %s", err, out)
		}
		t1 := time.Now()
		if _, err := Create(context.Background(), log, CreateConfig{Sources: []string{path}}); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		theirs += t1.Sub(t0)
		ours += t2.Sub(t1)
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(ours), "pxeswarm-MB/s")
	b.ReportMetric(mbps(theirs), "sha1sum-MB/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x-sha1sum")
}

// BenchmarkChunkSize fetches the same image from a pxeswarm seeder on
// loopback at 64 KiB (the default) and at 16 KiB (StockChunkSize, what a
// fetch falls back to once a stock client offers pieces), alternating in
// each iteration, and reports the ratios of CPU time (this process: seeder
// and fetcher both) and of wall time, 16 KiB over 64 KiB.
//
//	go test -run=NONE -bench=ChunkSize -benchtime=3x ./imager/
func BenchmarkChunkSize(b *testing.B) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 64 << 20
	}
	dir := b.TempDir()
	im, srcs := makeImage(b, dir, []int64{size}, 0)
	seed := Config{Image: im, Paths: srcs, Mode: ModeSeed, Listen: "127.0.0.1:0", Trackers: []string{}}
	s, err := seed.Join(context.Background(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	run := func(chunk int) (cpu, wall time.Duration) {
		target := filepath.Join(dir, "target")
		os.Remove(target)
		cfg := Config{Image: im, Paths: []string{target}, Mode: ModeFresh, Listen: "127.0.0.1:0",
			Trackers: []string{}, Peers: []string{s.ListenAddr()}, Tuning: Tuning{ChunkSize: chunk}}
		c0, t0 := cpuTime(b), time.Now()
		if _, err := cfg.Run(context.Background(), slog.New(slog.DiscardHandler), 0); err != nil {
			b.Fatal(err)
		}
		return cpuTime(b) - c0, time.Since(t0)
	}
	var cpu64, cpu16, wall64, wall16 time.Duration
	b.ResetTimer()
	for b.Loop() {
		c, w := run(64 << 10)
		cpu64, wall64 = cpu64+c, wall64+w
		c, w = run(StockChunkSize)
		cpu16, wall16 = cpu16+c, wall16+w
	}
	b.ReportMetric(cpu16.Seconds()/cpu64.Seconds(), "cpu-16K/64K")
	b.ReportMetric(wall16.Seconds()/wall64.Seconds(), "wall-16K/64K")
	b.ReportMetric(float64(size)*float64(b.N)/wall64.Seconds()/1e6, "MB/s-64K")
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
