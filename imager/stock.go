package imager

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Stock clients and the chunk size.
//
// pxeswarm asks its peers for 64 KiB chunks (Tuning.ChunkSize); stock
// clients answer 16 KiB requests only: Transmission 3 leaves larger ones
// unanswered, and libtorrent (qBittorrent) rejects them, so a fetch of a
// pxeswarm image from them alone got nothing. anacrolix fixes the chunk
// size when a torrent is added (AddTorrentOpts.ChunkSize; it has no setter),
// so a fetch that finds a stock client offering pieces drops its torrent
// and adds it again at StockChunkSize, once: the pieces already verified on
// the targets stay (they are in the session's completion, which outlives
// the torrent), the chunks of pieces still incomplete are fetched again,
// and the peers it was connected to are dialled again. A stock client that
// only downloads (it offers no piece) changes nothing: it sends requests,
// and we answer any size.

// stockPeer is a foreign client that offered pieces.
type stockPeer struct {
	name string         // its extended-handshake "v", or its peer ID
	addr netip.AddrPort // where to dial it again, if known
}

// watchStockPeers reports, on found, each foreign client (no pxeswarm
// peer ID) that offers a piece: a Have, a HaveAll or a bitfield with a bit
// set. It never blocks: anacrolix calls ReadMessage with its client lock
// held, and found holds one report, which is all the session needs.
func watchStockPeers(cb *torrent.Callbacks, found chan<- stockPeer) {
	prev := cb.ReadMessage
	cb.ReadMessage = func(pc *torrent.PeerConn, msg *pp.Message) {
		if protocol.PeerRole(pc.PeerID) == 0 && offersPieces(msg) {
			select {
			case found <- stockPeer{name: clientName(pc), addr: dialAddr(pc)}:
			default:
			}
		}
		if prev != nil {
			prev(pc, msg)
		}
	}
}

// offersPieces reports whether msg says its sender holds a piece.
func offersPieces(msg *pp.Message) bool {
	switch msg.Type {
	case pp.Have, pp.HaveAll:
		return true
	case pp.Bitfield:
		for _, b := range msg.Bitfield {
			if b {
				return true
			}
		}
	}
	return false
}

// clientName names a peer for logs: its extended-handshake "v" (such as
// "Transmission 3.00" or "qBittorrent/4.5.2"), else its peer ID's printable
// prefix.
func clientName(pc *torrent.PeerConn) string {
	if v, ok := pc.PeerClientName.Load().(string); ok && v != "" {
		return v
	}
	id := string(pc.PeerID[:8])
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, id)
}

// dialAddr is where pc listens: its address, with the listen port from
// its extended handshake when it gave one (an incoming connection comes
// from another port).
func dialAddr(pc *torrent.PeerConn) netip.AddrPort {
	ap, err := netip.ParseAddrPort(fmt.Sprint(pc.RemoteAddr))
	if err != nil {
		return netip.AddrPort{}
	}
	if pc.PeerListenPort > 0 && pc.PeerListenPort < 1<<16 {
		ap = netip.AddrPortFrom(ap.Addr(), uint16(pc.PeerListenPort))
	}
	return ap
}

// fallBack waits for the first stock client that offers pieces, then
// replaces the torrent (asked at chunk bytes a request) with one asked at
// StockChunkSize, and dials again the peers the old one was connected to.
// It returns at once when the session closes first.
func (s *Session) fallBack(chunk int) {
	defer s.bg.Done()
	var sp stockPeer
	select {
	case sp = <-s.stockFound:
	case <-s.stop:
		return
	}
	old, _ := s.torrent()
	if old.Complete().Bool() {
		return
	}
	s.log.Info("a stock BitTorrent client offers pieces: asking in 16KiB chunks from now on, which stock clients answer (they leave larger ones unanswered); the pieces already verified stay",
		"client", sp.name, "addr", sp.addr, "was", bytesize.Format(int64(chunk)))
	var again []torrent.PeerInfo
	if sp.addr.IsValid() {
		again = append(again, torrent.PeerInfo{Addr: sp.addr, Source: torrent.PeerSourceDirect})
	}
	for _, pc := range old.PeerConns() {
		if ap := dialAddr(pc); ap.IsValid() && ap != sp.addr {
			again = append(again, torrent.PeerInfo{Addr: ap, Source: torrent.PeerSourceDirect})
		}
	}
	old.Drop()
	t := s.addTorrent(StockChunkSize, true)
	t.AddPeers(again)
	s.mu.Lock()
	s.before = s.before.plus(countersOf(old.Stats()))
	s.t = t
	s.mu.Unlock()
	close(s.swapped)
}
