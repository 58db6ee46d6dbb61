package imager

import (
	"cmp"
	"slices"
	"sync"

	"github.com/anacrolix/torrent"
)

// ServerSource is the Source.Addr of the image hosts: a pxeswarm seeder
// (by its peer ID) and web seeds.
const ServerSource = "server"

// Source is what a fetching session received from one source: useful
// image bytes (chunks it still wanted), counted as they arrive.
type Source struct {
	// Addr is ServerSource or the peer's IP and listen port.
	Addr  string `json:"addr"`
	Bytes int64  `json:"bytes"`
}

// sourceMeter counts useful bytes per source. Connections come and go
// (and their anacrolix stats with them), so it keeps its own totals,
// keyed by where the peer listens, not by connection.
type sourceMeter struct {
	mu sync.Mutex
	by map[string]int64
}

// maxSources bounds the meter: a swarm of more peers than this counts
// the rest under none (they are also past what a report carries).
const maxSources = 1024

func (m *sourceMeter) add(addr string, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.by == nil {
		m.by = map[string]int64{}
	}
	if _, ok := m.by[addr]; !ok && len(m.by) >= maxSources {
		return
	}
	m.by[addr] += n
}

// received counts one ReceivedUsefulData event: the server's when it
// came from a scheduled seeder or a web seed (no PeerConn), else the
// peer's dial address.
func (m *sourceMeter) received(e torrent.ReceivedUsefulDataEvent) (fromServer bool) {
	n := int64(len(e.Message.Piece))
	pc, ok := e.Peer.TryAsPeerConn()
	if !ok || isScheduledSeeder(pc.PeerID) {
		m.add(ServerSource, n)
		return true
	}
	addr := "?"
	if ap := dialAddr(pc); ap.IsValid() {
		addr = ap.String()
	}
	m.add(addr, n)
	return false
}

// snapshot lists the sources, largest first (ties by address).
func (m *sourceMeter) snapshot() []Source {
	m.mu.Lock()
	ret := make([]Source, 0, len(m.by))
	for a, n := range m.by {
		ret = append(ret, Source{Addr: a, Bytes: n})
	}
	m.mu.Unlock()
	slices.SortFunc(ret, func(a, b Source) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.Addr, b.Addr))
	})
	return ret
}
