package imager

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestSourcesPerPeer: in a real swarm on loopback (an image host that
// sends slowly and three fetching machines that know each other), each
// machine's Progress.Sources splits the useful bytes it received between
// the server (the seeder, known by its peer ID) and the other machines,
// named by where they listen (not by an incoming connection's port). The
// split adds up to what anacrolix counted as useful, and what the others
// say they got from a machine is no more than that machine sent.
func TestSourcesPerPeer(t *testing.T) {
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{6 << 20}, 0)
	scfg := testingConfig(t)
	scfg.Image, scfg.Paths, scfg.Mode = im, srcs, ModeSeed
	scfg.Tuning.UploadLimit = 2 << 20
	seed := startSession(t, scfg)
	var fetchers []*Session
	for i := range 3 {
		peers := []string{seed.ListenAddr()}
		for _, f := range fetchers {
			peers = append(peers, f.ListenAddr())
		}
		fetchers = append(fetchers, startFetch(t, im, filepath.Join(dir, fmt.Sprint(i)), peers...))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	byAddr := map[string]*Session{}
	for _, s := range fetchers {
		if err := s.Wait(ctx); err != nil {
			t.Fatalf("fetch: %v", err)
		}
		byAddr[s.ListenAddr()] = s
	}
	gotFrom := map[string]int64{} // by listen address, summed over receivers
	for i, s := range fetchers {
		p := s.Progress()
		t.Logf("%d (%s): useful %d, from seeders %d, uploaded %d, sources %+v", i, s.ListenAddr(), p.Downloaded-p.Wasted, p.FromSeeders, p.Uploaded, p.Sources)
		sum, server := int64(0), int64(0)
		for _, src := range p.Sources {
			sum += src.Bytes
			switch other := byAddr[src.Addr]; {
			case src.Addr == ServerSource:
				server = src.Bytes
			case other != nil && other != s:
				gotFrom[src.Addr] += src.Bytes
			default:
				t.Errorf("%d: source %q is neither the server nor another machine", i, src.Addr)
			}
		}
		if useful := p.Downloaded - p.Wasted; sum != useful {
			t.Errorf("%d: sources add up to %d, want the useful bytes received %d", i, sum, useful)
		}
		if server != p.FromSeeders || server == 0 {
			t.Errorf("%d: from the server %d, want FromSeeders %d (> 0)", i, server, p.FromSeeders)
		}
		if sum < im.Length {
			t.Errorf("%d: sources add up to %d, less than the image's %d bytes", i, sum, im.Length)
		}
	}
	total := int64(0)
	for addr, n := range gotFrom {
		total += n
		if up := byAddr[addr].Progress().Uploaded; n > up {
			t.Errorf("the others got %d bytes from %s, which sent only %d", n, addr, up)
		}
	}
	if total == 0 {
		t.Error("no machine received anything from another: the image host's upload limit should have made them trade")
	}
}
