package imager

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"

	"github.com/pxeswarm/pxeswarm/protocol"
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
//   - A pxeswarm seeder's peer ID carries [protocol.RoleSeeder]. A pxeswarm
//     leecher rewrites that seeder's HaveAll (or bitfield) to "have none"
//     as it reads it, so it will not ask the seeder for anything yet.
//   - The seeder reveals pieces to each leecher one at a time over the
//     extension; the leecher rewrites each reveal into a Have as it reads
//     it. So the leecher asks the seeder only for revealed pieces.
//   - The seeder keeps a small global window of reveals in flight and
//     refills it as leechers announce pieces (Have), each time to the
//     leecher that has had the least from it. It always reveals the piece
//     with the fewest copies among leechers (held + revealed): first every
//     piece once, then the rarest.
//
// Leechers trade everything else among themselves with anacrolix's own
// logic. Foreign clients (qBittorrent, Transmission) see a normal seeder.
//
// Anyone can open a connection, advertise the extension and claim pieces,
// so the schedule holds nothing back on claims it cannot check (issue 15,
// finding 2: three such connections claiming every piece but one stalled
// two real fetchers at 0% for 90 s):
//
//   - A claim (Have, bitfield) is credited, and so counts as a copy in the
//     swarm, only when the seeder can attribute it to a transfer: the
//     claimant asked the seeder for every block of that piece after it
//     was revealed to it, or some credited holder had the piece already (a
//     partner could have passed it on). Uncredited claims only stop the
//     seeder from revealing that piece to the claimant itself.
//   - A reveal the leecher does not ask for (Request) within the stale
//     time is taken back; its piece goes to leechers that have asked the
//     seeder for something, and the silent leecher gets no more reveals
//     until it asks.
//   - A leecher that lacks pieces and has sent neither a Have nor a
//     Request for stallAfter is served as a plain seeder would: every
//     piece is revealed to it, so it asks for whatever it lacks.
//
// The listener also caps the connections one address may hold
// (Tuning.MaxConnsPerHost), so one host cannot open hundreds of them.
const revealExt pp.ExtensionName = "pxeswarm_reveal"

func newPeerID(seeder bool) string {
	id := make([]byte, 20)
	copy(id, protocol.PeerIDPrefix)
	id[len(protocol.PeerIDPrefix)] = protocol.RoleMachine
	if seeder {
		id[len(protocol.PeerIDPrefix)] = protocol.RoleSeeder
	}
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	rand.Read(id[len(protocol.PeerIDPrefix)+1:])
	for i := len(protocol.PeerIDPrefix) + 1; i < len(id); i++ {
		id[i] = alnum[int(id[i])%len(alnum)]
	}
	return string(id)
}

func isScheduledSeeder(id torrent.PeerID) bool { return protocol.PeerRole(id) == protocol.RoleSeeder }

// isPartner says whether id is a pxeswarm machine that fetches (and
// trades), as opposed to a seeder or a foreign client.
func isPartner(id torrent.PeerID) bool { return protocol.PeerRole(id) == protocol.RoleMachine }

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

// schedule is the seeder's side. Its window is global: only a few reveals
// are in flight at once, so the seeder sends each piece at close to its
// full link rate and a piece reaches the swarm (becomes tradeable) a piece
// time after it was revealed. Splitting the seeder's link across every
// leecher instead would hold N pieces half-sent at any moment, a lag of
// N×piece/R before peers can trade them.
type schedule struct {
	mu       sync.Mutex
	n        int
	pieceLen func(int) int64
	avail    []int32 // credited holders of each piece (see claim)
	pending  []int32 // outstanding reveals of each piece
	// taken marks pieces whose reveal went unasked; only leechers that
	// have asked the seeder for something get them while the swarm lacks
	// pieces.
	taken     []bool
	next      int // pieces below next were revealed at least once
	held      int // pieces some leecher holds (credited)
	revealAt  []time.Time
	leechers  map[*torrent.PeerConn]*leecher
	pieceTime time.Duration // smoothed reveal-to-Have time
	// byRule counts reveals by the rule of pick that chose them, and
	// started and allHeldAt date the schedule and the first time the
	// swarm held every piece: the seeder's log says where its copies went.
	byRule    [numRules]int
	started   time.Time
	allHeldAt time.Time
	// stallAfter is how long a leecher that lacks pieces may go without a
	// Have or Request before it is served plainly; 0: max(10s, 2×stale).
	stallAfter time.Duration
	log        *slog.Logger
	stop       chan struct{}
	stopOnce   sync.Once
	// send delivers one reveal; WriteExtendedMessage over the leecher's
	// connection, or a recorder in tests.
	send func(pc *torrent.PeerConn, piece int) error
}

type leecher struct {
	pc         *torrent.PeerConn
	has        []bool // pieces it claims: never revealed to it
	claims     int    // pieces in has
	cred       []bool // claims the schedule credits (they count in avail)
	holds      int    // pieces in cred
	revealed   map[int]*reveal
	fromSeeder int       // pieces revealed to it so far
	proven     bool      // it has asked the seeder for a piece
	strikes    int       // reveals it let go stale unasked since it last asked
	active     time.Time // its last Have or Request, or when it joined
	// fromOthers is when it last claimed a piece it did not ask the
	// seeder for: someone else is feeding it.
	fromOthers time.Time
	plain      bool     // served plainly: every piece revealed, not scheduled
	out        chan int // reveals to send
	done       chan struct{}
}

// reveal is one piece revealed to one leecher.
type reveal struct {
	at     time.Time
	blocks []bool // requested, per revealBlock of the piece; nil: not asked
	asked  int    // true entries in blocks
}

// revealBlock is the granularity at which the schedule tracks what a
// leecher asked for (BEP 3's customary request size; anacrolix asks in
// multiples of it). Requests that do not start on a block are ignored.
const revealBlock = 16 << 10

const (
	// globalWindow is the reveals in flight at once, over all leechers
	// (0: no global limit).
	globalWindow = 0
	// perLeecher is the active reveals one leecher may have.
	perLeecher = 1
	// maxPending caps one leecher's outstanding reveals, stale included.
	maxPending = 4
	// maxPieceTime bounds the learned piece time, so leechers that answer
	// slowly on purpose cannot stretch the stale time without limit.
	maxPieceTime = 30 * time.Second
	// minStallAfter is the least time without a Have or Request before a
	// leecher is served plainly.
	minStallAfter = 10 * time.Second
)

func newSchedule(n int, pieceLen func(int) int64, log *slog.Logger) *schedule {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &schedule{n: n, pieceLen: pieceLen, avail: make([]int32, n), pending: make([]int32, n), taken: make([]bool, n),
		revealAt: make([]time.Time, n), leechers: map[*torrent.PeerConn]*leecher{}, pieceTime: time.Second, started: time.Now(),
		log: log, stop: make(chan struct{}),
		send: func(pc *torrent.PeerConn, i int) error {
			var buf [4]byte
			binary.BigEndian.PutUint32(buf[:], uint32(i))
			return pc.WriteExtendedMessage(revealExt, buf[:])
		}}
	go func() {
		// A reveal to a slow or stalled leecher stops counting against
		// the window once it is stale, an unasked one is taken back, and
		// a stalled leecher is served plainly; this tick notices.
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.mu.Lock()
				s.fill(time.Now())
				s.mu.Unlock()
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

// close stops the tick and logs what the schedule revealed.
func (s *schedule) close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.log.Info("seeder schedule stopped", "after", time.Since(s.started).Round(time.Millisecond), s.reveals())
	})
}

// callbacks installs the seeder's side. Callbacks run with anacrolix's
// client lock held, so sends happen on a goroutine per leecher.
func (s *schedule) callbacks(cb *torrent.Callbacks) {
	cb.PeerConnAdded = append(cb.PeerConnAdded, addRevealExt)
	cb.ReadExtendedHandshake = func(pc *torrent.PeerConn, hs *pp.ExtendedHandshakeMessage) {
		// Another image host (it says so in its peer ID) fetches nothing.
		if _, ok := hs.M[revealExt]; ok && !isScheduledSeeder(pc.PeerID) {
			s.add(pc)
		}
	}
	cb.ReadMessage = func(pc *torrent.PeerConn, msg *pp.Message) {
		switch msg.Type {
		case pp.Have:
			s.have(pc, int(msg.Index))
		case pp.Bitfield:
			s.bitfield(pc, msg.Bitfield)
		case pp.HaveAll: // BEP 6
			s.bitfield(pc, slices.Repeat([]bool{true}, s.n))
		case pp.Request:
			s.request(pc, int(msg.Index), int64(msg.Begin), int64(msg.Length))
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
	now := time.Now()
	l := &leecher{pc: pc, has: make([]bool, s.n), cred: make([]bool, s.n), revealed: map[int]*reveal{}, active: now,
		out: make(chan int, s.n+maxPending), done: make(chan struct{})}
	// pxeswarm peers send their extended handshake before their
	// bitfield, so every Have and bitfield arrives after this.
	s.leechers[pc] = l
	go func() {
		for {
			select {
			case i := <-l.out:
				if s.send(pc, i) != nil {
					return
				}
			case <-l.done:
				return
			}
		}
	}()
	s.fill(now)
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
		s.drop(l, i)
	}
	// A leecher that completed leaves the seeder because both sides are
	// complete (anacrolix drops mutually complete peers), not the swarm:
	// it goes on seeding to the others, so its copies still count.
	// Counting them gone made the seeder re-send the whole image to late
	// joiners (measured: 2.2 copies from the seeder with half the room
	// joining at 50%). Only credited copies count at all.
	if l.holds == s.n {
		return
	}
	for i, c := range l.cred {
		if c {
			s.avail[i]--
			if s.avail[i] == 0 {
				s.held--
			}
		}
	}
	s.fill(time.Now())
}

// drop takes back the reveal of piece i from l. Called with s.mu held.
func (s *schedule) drop(l *leecher, i int) {
	delete(l.revealed, i)
	s.pending[i]--
	if s.pending[i] == 0 {
		s.revealAt[i] = time.Time{} // free for others at once
	}
}

// request records that pc asked the seeder for part of piece i: the
// answer to a reveal.
func (s *schedule) request(pc *torrent.PeerConn, i int, begin, length int64) {
	if i < 0 || i >= s.n || begin < 0 || length <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leechers[pc]
	if !ok {
		return
	}
	l.active = time.Now()
	l.proven = true
	l.strikes = 0
	r, ok := l.revealed[i]
	if !ok || begin%revealBlock != 0 {
		return
	}
	size := s.pieceLen(i)
	if r.blocks == nil {
		r.blocks = make([]bool, (size+revealBlock-1)/revealBlock)
	}
	for b := begin / revealBlock; b < int64(len(r.blocks)) && b*revealBlock < begin+length; b++ {
		if !r.blocks[b] {
			r.blocks[b] = true
			r.asked++
		}
	}
}

// have records a claim. A credited one refills at once (a piece reached
// the swarm, the leecher is free for the next); any other waits for the
// next tick, so a peer that claims pieces one by one cannot make the
// seeder run fill for each.
func (s *schedule) have(pc *torrent.PeerConn, i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if l, ok := s.leechers[pc]; ok && s.claim(l, i, now) {
		s.fill(now)
	}
}

func (s *schedule) bitfield(pc *torrent.PeerConn, bf []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leechers[pc]
	if !ok {
		return
	}
	now := time.Now()
	credited := false
	for i, v := range bf {
		if v && s.claim(l, i, now) {
			credited = true
		}
	}
	if credited {
		s.fill(now)
	}
}

// claim records that l says it holds piece i, and credits the claim if
// the seeder can attribute it to a transfer: l asked the seeder for the
// whole piece after it was revealed, or a credited holder had it already
// (a partner could have passed it on). It reports whether the claim was
// new and credited. Called with s.mu held.
func (s *schedule) claim(l *leecher, i int, now time.Time) bool {
	if i < 0 || i >= s.n || l.has[i] {
		return false
	}
	l.active = now
	l.has[i] = true
	l.claims++
	credit := s.avail[i] > 0
	fromUs := false
	if r, ok := l.revealed[i]; ok {
		delete(l.revealed, i)
		s.pending[i]--
		if r.blocks != nil && r.asked == len(r.blocks) {
			fromUs = true
			credit = true
			if d := now.Sub(r.at); d < s.stale() {
				s.pieceTime = min(s.pieceTime+(d-s.pieceTime)/4, maxPieceTime)
			}
		} else if s.pending[i] == 0 && s.avail[i] == 0 {
			// Claimed without asking us for it all: nobody is known to
			// be receiving it any more.
			s.revealAt[i] = time.Time{}
		}
	}
	if !fromUs {
		l.fromOthers = now
	}
	if credit {
		l.cred[i] = true
		l.holds++
		s.avail[i]++
		if s.avail[i] == 1 {
			s.held++
			if s.held == s.n && s.allHeldAt.IsZero() {
				s.allHeldAt = now
				s.log.Info("every piece has reached a machine; from here the seeder reveals each machine the rarest piece it lacks",
					"after", now.Sub(s.started).Round(time.Millisecond), s.reveals())
			}
		}
	}
	return credit
}

// stale is how long a reveal counts against the window, and how long a
// leecher has to ask for a reveal before it is taken back.
func (s *schedule) stale() time.Duration { return max(4*s.pieceTime, 500*time.Millisecond) }

func (s *schedule) stallTime() time.Duration {
	if s.stallAfter > 0 {
		return s.stallAfter
	}
	return max(minStallAfter, 2*s.stale())
}

// fill takes back unasked reveals, serves stalled leechers plainly, and
// reveals pieces: each leecher may have perLeecher active reveals, and at
// most globalWindow are active in all (if set). Leechers that have asked
// the seeder for something go first, then those that have had the fewest
// pieces from it. Called with s.mu held.
func (s *schedule) fill(now time.Time) {
	stale := s.stale()
	stall := s.stallTime()
	active := 0
	ls := make([]*leecher, 0, len(s.leechers))
	for _, l := range s.leechers {
		if l.plain {
			continue
		}
		for i, r := range l.revealed {
			// Unasked and stale: taken back. It is a strike only for a
			// piece nobody else holds; l had nowhere else to get it.
			if r.blocks == nil && now.Sub(r.at) >= stale {
				s.drop(l, i)
				if s.avail[i] == 0 {
					s.taken[i] = true
					l.strikes++
				}
			}
		}
		if l.claims < s.n && now.Sub(l.active) >= stall {
			s.servePlainly(l, stall)
			continue
		}
		active += activeOf(l, now, stale)
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(a, b *leecher) int {
		if a.proven != b.proven {
			if a.proven {
				return -1
			}
			return 1
		}
		return a.fromSeeder - b.fromSeeder
	})
	front := 0
	if s.held < s.n {
		front = frontHolds(ls)
	}
	for _, l := range ls {
		// A leecher that let a reveal go stale unasked gets no more until
		// it asks for something.
		if l.holds < front || l.strikes > 0 {
			continue
		}
		for activeOf(l, now, stale) < perLeecher && len(l.revealed) < maxPending {
			if globalWindow > 0 && active >= globalWindow {
				return
			}
			i, rule := s.pick(l, now, stale)
			if i < 0 {
				break
			}
			s.byRule[rule]++
			l.revealed[i] = &reveal{at: now}
			s.revealAt[i] = now
			l.fromSeeder++
			s.pending[i]++
			l.out <- i
			active++
		}
	}
}

// servePlainly stops scheduling l and reveals every piece to it, as a
// plain seeder's bitfield would: it made no progress for stall (no Have,
// no Request) while it lacks pieces, so whatever held its pieces back
// (claims the seeder could not check, reveals to peers that never asked)
// must not keep it waiting. Called with s.mu held.
func (s *schedule) servePlainly(l *leecher, stall time.Duration) {
	l.plain = true
	for i := range l.revealed {
		s.drop(l, i)
	}
	s.log.Info("a peer made no progress under the seeder's schedule; serving it every piece",
		"peer", l.pc.RemoteAddr, "idle", stall, "pieces_claimed", l.claims, "pieces", s.n)
	go func() {
		for i := range s.n {
			select {
			case <-l.done:
				return
			default:
			}
			if s.send(l.pc, i) != nil {
				return
			}
		}
	}()
}

// frontHolds is what a leecher must hold to get a piece the swarm lacks:
// half of what the median leecher holds. Leechers below it, such as
// machines that joined late, are skipped while the swarm lacks pieces.
// They have plenty to fetch from their peers, and a new piece given to a
// leecher at the front reaches the others sooner; once the swarm holds
// every piece they get the rarest ones like everybody. Measured
// on the bench LAN with half of 8 machines joining when the first half was
// at 50%: without this rule the seeder split its new pieces among all eight
// and both halves took 1.54–1.57× T_min for their own download. Holds are
// credited pieces only, so claims alone cannot push real leechers behind
// the front.
func frontHolds(ls []*leecher) int {
	if len(ls) == 0 {
		return 0
	}
	holds := make([]int, len(ls))
	for i, l := range ls {
		holds[i] = l.holds
	}
	slices.Sort(holds)
	return (holds[len(holds)/2] + 1) / 2 // 2*holds < median ⇔ holds < ⌈median/2⌉
}

// pick returns the next piece to reveal to l, or -1:
//  1. a piece never revealed, in order (found in O(1));
//  2. while some piece is still on its way to its first holder, only such
//     a piece whose reveals have all gone stale (its leecher is slow or
//     gone): sending a copy of anything the swarm already holds would take
//     the seeder's link from the pieces only it can give;
//  3. once the swarm holds every piece, the one l lacks with the fewest
//     copies, but only while nobody else feeds l: it has claimed no piece
//     it did not ask the seeder for within the stale time. Machines that
//     trade get their last pieces from each other. Without that condition
//     the seeder streamed the rarest pieces to every machine for the rest
//     of the run once the swarm held everything, however fast they traded:
//     with CPU-limited machines on a fast link (bench, slow peers, N=8),
//     the swarm held every piece 12.6 s in, 1448 rarest reveals followed
//     and the server sent 3.48 copies, against 1.02-1.11 in the runs that
//     never reached the rule (most: the schedule's count of held pieces
//     rarely reaches every piece, see docs/SWARM.md).
//
// While the swarm lacks pieces, a piece whose reveal went unasked goes
// only to a leecher that has asked the seeder for something.
func (s *schedule) pick(l *leecher, now time.Time, stale time.Duration) (int, pickRule) {
	for s.next < s.n && (s.avail[s.next] > 0 || s.pending[s.next] > 0) {
		s.next++
	}
	if s.next < s.n && !l.has[s.next] && (l.proven || !s.taken[s.next]) {
		i := s.next
		s.next++
		return i, ruleFirst
	}
	allHeld := s.held == s.n
	if allHeld && !l.fromOthers.IsZero() && now.Sub(l.fromOthers) < stale {
		return -1, ruleRarest
	}
	best, bestKey := -1, int32(1<<30)
	for i := 0; i < s.n; i++ {
		if l.has[i] {
			continue
		}
		if _, ok := l.revealed[i]; ok {
			continue
		}
		if !allHeld && (s.avail[i] > 0 || now.Sub(s.revealAt[i]) < stale || (s.taken[i] && !l.proven)) {
			continue
		}
		if k := s.avail[i] + s.pending[i]; k < bestKey {
			best, bestKey = i, k
			if k == 0 {
				break
			}
		}
	}
	if allHeld {
		return best, ruleRarest
	}
	return best, ruleStale
}

// pickRule names the rule of pick that chose a reveal.
type pickRule int

const (
	ruleFirst  pickRule = iota // 1: a piece never revealed
	ruleStale                  // 2: a piece whose reveals went stale before its first holder had it
	ruleRarest                 // 3: once the swarm holds every piece, the rarest one the leecher lacks
	numRules
)

// reveals is the log attribute with the reveals so far by rule. Called
// with s.mu held.
func (s *schedule) reveals() slog.Attr {
	return slog.Group("reveals", "first", s.byRule[ruleFirst], "stale_again", s.byRule[ruleStale],
		"rarest", s.byRule[ruleRarest], "pieces", s.n, "held", s.held)
}

func activeOf(l *leecher, now time.Time, stale time.Duration) int {
	n := 0
	for _, r := range l.revealed {
		if now.Sub(r.at) < stale {
			n++
		}
	}
	return n
}
