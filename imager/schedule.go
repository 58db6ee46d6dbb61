package imager

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// The seeder's schedule: each piece leaves the image host about once.
//
// Measured on this project's probe LAN, a plain swarm's finish time tracks
// the bytes the seeder sends, and a plain anacrolix seeder sends 1.5–3.5
// copies of the image because every leecher asks it for whatever it lacks.
// The fix is the one BEP 16 super-seeding aims at: hand each leecher a
// different piece and let them trade. It works through a small LTEP
// extension, [revealExt], between pxeswarm peers only:
//
//   - A pxeswarm seeder's peer ID carries [seederIDMark]. A pxeswarm
//     leecher rewrites that seeder's HaveAll (or bitfield) to "have none"
//     as it reads it, so it will not ask the seeder for anything yet.
//   - The seeder reveals pieces to each leecher one at a time over the
//     extension; the leecher rewrites each reveal into a Have as it reads
//     it. So the leecher asks the seeder only for revealed pieces.
//   - The seeder keeps a small window of revealed, not yet received pieces
//     per leecher, and tops it up as the leecher announces pieces (Have).
//     It always reveals the piece with the fewest copies among leechers
//     (held + revealed): first every piece once, then the rarest.
//
// Leechers trade everything else among themselves with anacrolix's own
// logic. Foreign clients (qBittorrent, Transmission) see a normal seeder.
const (
	revealExt pp.ExtensionName = "pxeswarm_reveal"
	// Peer IDs: BEP 20 style client prefix, then S (seeder) or L.
	peerIDPrefix = "-PX0001-"
	seederIDMark = 'S'
	leecherMark  = 'L'
	// revealWindow is the revealed-but-not-received pieces per leecher.
	revealWindow = 2
)

func newPeerID(seeder bool) string {
	id := make([]byte, 20)
	copy(id, peerIDPrefix)
	id[len(peerIDPrefix)] = leecherMark
	if seeder {
		id[len(peerIDPrefix)] = seederIDMark
	}
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	rand.Read(id[len(peerIDPrefix)+1:])
	for i := len(peerIDPrefix) + 1; i < len(id); i++ {
		id[i] = alnum[int(id[i])%len(alnum)]
	}
	return string(id)
}

func isScheduledSeeder(id torrent.PeerID) bool {
	return string(id[:len(peerIDPrefix)]) == peerIDPrefix && id[len(peerIDPrefix)] == seederIDMark
}

// addRevealExt advertises the extension on every connection.
func addRevealExt(pc *torrent.PeerConn) {
	m := *pc.LocalLtepProtocolMap
	m.Index = slices.Clone(m.Index)
	m.AddUserProtocol(revealExt)
	pc.LocalLtepProtocolMap = &m
}

// leecherCallbacks installs the leecher's side: hide what a scheduled
// seeder has until it reveals it.
func leecherCallbacks(cb *torrent.Callbacks, numPieces int) {
	cb.PeerConnAdded = append(cb.PeerConnAdded, addRevealExt)
	cb.ReadMessage = func(pc *torrent.PeerConn, msg *pp.Message) {
		if !isScheduledSeeder(pc.PeerID) {
			return
		}
		switch msg.Type {
		case pp.HaveAll:
			msg.Type = pp.HaveNone
		case pp.Bitfield:
			clear(msg.Bitfield)
		case pp.Extended:
			name, _, err := pc.LocalLtepProtocolMap.LookupId(msg.ExtendedID)
			if err != nil || name != revealExt || len(msg.ExtendedPayload) != 4 {
				return
			}
			idx := binary.BigEndian.Uint32(msg.ExtendedPayload)
			if int(idx) >= numPieces {
				return
			}
			*msg = pp.Message{Type: pp.Have, Index: pp.Integer(idx)}
		}
	}
}

// schedule is the seeder's side.
type schedule struct {
	mu       sync.Mutex
	n        int
	avail    []int32 // scheduled leechers holding each piece
	pending  []int32 // outstanding reveals of each piece
	next     int     // pieces below next were revealed at least once
	leechers map[*torrent.PeerConn]*leecher
}

type leecher struct {
	has      []bool
	revealed map[int]bool // revealed and not yet held
	out      chan int     // reveals to send
	done     chan struct{}
}

func newSchedule(n int) *schedule {
	return &schedule{n: n, avail: make([]int32, n), pending: make([]int32, n), leechers: map[*torrent.PeerConn]*leecher{}}
}

// callbacks installs the seeder's side. Callbacks run with anacrolix's
// client lock held, so sends happen on a goroutine per leecher.
func (s *schedule) callbacks(cb *torrent.Callbacks) {
	cb.PeerConnAdded = append(cb.PeerConnAdded, addRevealExt)
	cb.ReadExtendedHandshake = func(pc *torrent.PeerConn, hs *pp.ExtendedHandshakeMessage) {
		if _, ok := hs.M[revealExt]; ok {
			s.add(pc)
		}
	}
	cb.ReadMessage = func(pc *torrent.PeerConn, msg *pp.Message) {
		switch msg.Type {
		case pp.Have:
			s.have(pc, int(msg.Index))
		case pp.Bitfield:
			s.bitfield(pc, msg.Bitfield)
		}
	}
	cb.PeerConnClosed = s.remove
}

func (s *schedule) add(pc *torrent.PeerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.leechers[pc]; ok {
		return
	}
	l := &leecher{has: make([]bool, s.n), revealed: map[int]bool{}, out: make(chan int, s.n+revealWindow), done: make(chan struct{})}
	// pxeswarm peers send their extended handshake before their
	// bitfield, so every Have and bitfield arrives after this.
	s.leechers[pc] = l
	go func() {
		buf := make([]byte, 4)
		for {
			select {
			case i := <-l.out:
				binary.BigEndian.PutUint32(buf, uint32(i))
				if pc.WriteExtendedMessage(revealExt, buf) != nil {
					return
				}
			case <-l.done:
				return
			}
		}
	}()
	s.topUp(l)
}

func (s *schedule) remove(pc *torrent.PeerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leechers[pc]
	if !ok {
		return
	}
	delete(s.leechers, pc)
	close(l.done)
	for i := range l.revealed {
		s.pending[i]--
	}
	for i, h := range l.has {
		if h {
			s.avail[i]--
		}
	}
}

func (s *schedule) have(pc *torrent.PeerConn, i int) {
	if i < 0 || i >= s.n {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leechers[pc]
	if !ok || l.has[i] {
		return
	}
	l.has[i] = true
	s.avail[i]++
	if l.revealed[i] {
		delete(l.revealed, i)
		s.pending[i]--
	}
	s.topUp(l)
}

func (s *schedule) bitfield(pc *torrent.PeerConn, bf []bool) {
	for i, v := range bf {
		if v {
			s.have(pc, i)
		}
	}
}

// topUp reveals pieces to l until its window is full. Called with s.mu.
func (s *schedule) topUp(l *leecher) {
	for len(l.revealed) < revealWindow {
		i := s.pick(l)
		if i < 0 {
			return
		}
		l.revealed[i] = true
		s.pending[i]++
		l.out <- i
	}
}

// pick returns the piece l lacks with the fewest copies (held + revealed),
// or -1. Never-revealed pieces come first, in order, found in O(1).
func (s *schedule) pick(l *leecher) int {
	for s.next < s.n && (s.avail[s.next] > 0 || s.pending[s.next] > 0) {
		s.next++
	}
	if s.next < s.n && !l.has[s.next] {
		i := s.next
		s.next++
		return i
	}
	best, bestKey := -1, int32(1<<30)
	for i := 0; i < s.n; i++ {
		if l.has[i] || l.revealed[i] {
			continue
		}
		if k := s.avail[i] + s.pending[i]; k < bestKey {
			best, bestKey = i, k
			if k == 0 {
				break
			}
		}
	}
	return best
}
