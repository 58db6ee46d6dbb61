package imager

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
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
