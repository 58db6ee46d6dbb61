package imager

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// BenchmarkManyFiles measures what anacrolix does with a torrent of many
// small files, the layout ezio uses for a used-block image (one file per
// extent), against the one packed file per partition pxeswarm uses. The
// same 64 MiB goes from a seeding client to a fetching client on loopback
// (both in this process, stock anacrolix, no pxeswarm code in the path),
// as one file and as 4096 files of 16 KiB (a fragmented NTFS has tens of
// thousands of extents), alternating in each iteration. It reports, many
// files over one: the seeder's start (AddTorrent and hashing what it
// holds), the fetch's wall time, the process's CPU time for the fetch and
// the heap the two torrents hold.
//
//	go test -run=NONE -bench=ManyFiles -benchtime=3x ./imager/
func BenchmarkManyFiles(b *testing.B) {
	const total = 64 << 20
	files := 4096
	if testing.Short() {
		files = 512
	}
	one := makeFileTree(b, filepath.Join(b.TempDir(), "one"), 1, total)
	many := makeFileTree(b, filepath.Join(b.TempDir(), "many"), files, total)
	var sum [2]treeCost
	b.ResetTimer()
	for b.Loop() {
		for i, src := range []string{one, many} {
			c := transferTree(b, src)
			sum[i].start += c.start
			sum[i].fetch += c.fetch
			sum[i].cpu += c.cpu
			sum[i].heap += c.heap
		}
	}
	ratio := func(a, b time.Duration) float64 { return a.Seconds() / b.Seconds() }
	b.ReportMetric(ratio(sum[1].start, sum[0].start), "start-many/one")
	b.ReportMetric(ratio(sum[1].fetch, sum[0].fetch), "wall-many/one")
	b.ReportMetric(ratio(sum[1].cpu, sum[0].cpu), "cpu-many/one")
	b.ReportMetric(float64(sum[1].heap)/float64(max(sum[0].heap, 1)), "heap-many/one")
	b.ReportMetric(float64(sum[1].heap-sum[0].heap)/float64(b.N)/float64(files), "heap-B/file")
}

type treeCost struct {
	start, fetch, cpu time.Duration
	heap              int64
}

// makeFileTree writes n files of random bytes, total bytes in all, under
// dir (one file: dir itself is the file), and returns the torrent root.
func makeFileTree(b *testing.B, dir string, n int, total int64) string {
	rng := rand.New(rand.NewPCG(uint64(n), 16))
	buf := make([]byte, total/int64(n))
	if n == 1 {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(dir, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		return dir
	}
	for k := range n {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		// ezio names each extent's file by its offset.
		p := filepath.Join(dir, fmt.Sprintf("%016x", int64(k)*int64(len(buf))))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// transferTree seeds root with one anacrolix client and fetches it with
// another on loopback.
func transferTree(b *testing.B, root string) treeCost {
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(root); err != nil {
		b.Fatal(err)
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		b.Fatal(err)
	}
	mi := &metainfo.MetaInfo{InfoBytes: ib}
	client := func(dir string, seed bool) *torrent.Client {
		cfg := torrent.NewDefaultClientConfig()
		cfg.DataDir, cfg.Seed, cfg.NoDHT, cfg.DisableTrackers = dir, seed, true, true
		cfg.ListenHost = func(string) string { return "127.0.0.1" }
		cfg.ListenPort = 0
		cfg.DisableUTP, cfg.DisableIPv6 = true, true
		cfg.Slogger = slog.New(slog.DiscardHandler)
		cl, err := torrent.NewClient(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		return cl
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := int64(ms.HeapAlloc)
	var c treeCost
	t0 := time.Now()
	seeder := client(filepath.Dir(root), true)
	st, err := seeder.AddTorrent(mi)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.VerifyDataContext(context.Background()); err != nil {
		b.Fatal(err)
	}
	if st.BytesMissing() != 0 {
		b.Fatalf("seeder of %s misses %d bytes after verifying", root, st.BytesMissing())
	}
	c.start = time.Since(t0)
	fetcher := client(b.TempDir(), false)
	cpu0, t1 := cpuTime(b), time.Now()
	ft, err := fetcher.AddTorrent(mi)
	if err != nil {
		b.Fatal(err)
	}
	ft.AddClientPeer(seeder)
	ft.DownloadAll()
	select {
	case <-ft.Complete().On():
	case <-time.After(5 * time.Minute):
		b.Fatalf("fetch of %s not complete after 5 minutes: %d bytes missing", root, ft.BytesMissing())
	}
	c.fetch, c.cpu = time.Since(t1), cpuTime(b)-cpu0
	runtime.GC()
	runtime.ReadMemStats(&ms)
	c.heap = int64(ms.HeapAlloc) - heap0
	fetcher.Close()
	seeder.Close()
	return c
}
