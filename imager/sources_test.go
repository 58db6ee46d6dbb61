package imager

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestSourcesPerPeer: in a real swarm on loopback (an image host that
// sends slowly and two fetching machines that know each other), each
// machine's Progress.Sources splits the useful bytes it received between
// the server (the seeder, known by its peer ID) and the other machine,
// named by where that machine listens (not by an incoming connection's
// port), and the split adds up to what anacrolix counted as useful.
func TestSourcesPerPeer(t *testing.T) {
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{6 << 20}, 0)
	scfg := testingConfig(t)
	scfg.Image, scfg.Paths, scfg.Mode = im, srcs, ModeSeed
	scfg.Tuning.UploadLimit = 2 << 20
	seed := startSession(t, scfg)
	a := startFetch(t, im, filepath.Join(dir, "a"), seed.ListenAddr())
	b := startFetch(t, im, filepath.Join(dir, "b"), seed.ListenAddr(), a.ListenAddr())
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	for _, s := range []*Session{a, b} {
		if err := s.Wait(ctx); err != nil {
			t.Fatalf("fetch: %v", err)
		}
	}
	other := map[*Session]string{a: b.ListenAddr(), b: a.ListenAddr()}
	fromPeers := int64(0)
	for s, name := range map[*Session]string{a: "a", b: "b"} {
		p := s.Progress()
		t.Logf("%s (%s): useful %d, from seeders %d, sources %+v", name, s.ListenAddr(), p.Downloaded-p.Wasted, p.FromSeeders, p.Sources)
		sum, server := int64(0), int64(0)
		for _, src := range p.Sources {
			sum += src.Bytes
			switch src.Addr {
			case ServerSource:
				server = src.Bytes
			case other[s]:
				fromPeers += src.Bytes
			default:
				t.Errorf("%s: source %q is neither the server nor the other machine %s", name, src.Addr, other[s])
			}
		}
		if useful := p.Downloaded - p.Wasted; sum != useful {
			t.Errorf("%s: sources add up to %d, want the useful bytes received %d", name, sum, useful)
		}
		if server != p.FromSeeders || server == 0 {
			t.Errorf("%s: from the server %d, want FromSeeders %d (> 0)", name, server, p.FromSeeders)
		}
		if sum < im.Length {
			t.Errorf("%s: sources add up to %d, less than the image's %d bytes", name, sum, im.Length)
		}
	}
	if fromPeers == 0 {
		t.Error("neither machine received anything from the other: the image host's upload limit should have made them trade")
	}
}
