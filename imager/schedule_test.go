package imager

import (
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
)

// fakeSwarm drives a schedule with recorded reveals instead of sockets.
type fakeSwarm struct {
	mu       sync.Mutex
	s        *schedule
	revealed map[*torrent.PeerConn][]int
}

func newFakeSwarm(t *testing.T, pieces int) *fakeSwarm {
	f := &fakeSwarm{s: newSchedule(pieces, func(int) int64 { return 2 * revealBlock }, nil), revealed: map[*torrent.PeerConn][]int{}}
	f.s.send = func(pc *torrent.PeerConn, i int) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.revealed[pc] = append(f.revealed[pc], i)
		return nil
	}
	t.Cleanup(f.s.close)
	return f
}

// deliver plays a leecher that asks for the whole revealed piece i, in
// two requests, and then announces it.
func (f *fakeSwarm) deliver(pc *torrent.PeerConn, i int) {
	f.s.request(pc, i, 0, revealBlock)
	f.s.request(pc, i, revealBlock, revealBlock)
	f.s.have(pc, i)
}

// wait returns pc's reveals once it has at least n.
func (f *fakeSwarm) wait(t *testing.T, pc *torrent.PeerConn, n int) []int {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		f.mu.Lock()
		got := append([]int(nil), f.revealed[pc]...)
		f.mu.Unlock()
		if len(got) >= n {
			return got
		}
	}
	t.Fatalf("leecher got fewer than %d reveals", n)
	return nil
}

// TestScheduleRevealsEachPieceOnceFirst: while pieces remain that no
// leecher holds or was given, every reveal is a new piece; a leecher that
// finishes its piece gets the next one.
func TestScheduleRevealsEachPieceOnceFirst(t *testing.T) {
	const pieces, leechers = 12, 4
	f := newFakeSwarm(t, pieces)
	var pcs []*torrent.PeerConn
	for range leechers {
		pc := &torrent.PeerConn{}
		pcs = append(pcs, pc)
		f.s.add(pc)
	}
	seen := map[int]bool{}
	for round := 1; round <= pieces/leechers; round++ {
		for _, pc := range pcs {
			got := f.wait(t, pc, round)
			p := got[round-1]
			if seen[p] {
				t.Fatalf("piece %d revealed twice before every piece was revealed once", p)
			}
			seen[p] = true
			f.deliver(pc, p) // the leecher received it: reveal the next
		}
	}
	if len(seen) != pieces {
		t.Errorf("revealed %d distinct pieces, want %d", len(seen), pieces)
	}
}

// TestScheduleDoesNotResendWhatTheSwarmHolds: once every piece was
// revealed, a leecher gets no copy of a piece some leecher already holds
// while another piece is still on its way to its first holder.
func TestScheduleDoesNotResendWhatTheSwarmHolds(t *testing.T) {
	f := newFakeSwarm(t, 3)
	a, b := &torrent.PeerConn{}, &torrent.PeerConn{}
	f.s.add(a)
	f.s.add(b)
	pa := f.wait(t, a, 1)[0]
	pb := f.wait(t, b, 1)[0]
	f.deliver(a, pa) // a is free again; the third piece goes to it
	third := f.wait(t, a, 2)[1]
	if third == pa || third == pb {
		t.Fatalf("third reveal to a = %d, want the never-revealed piece", third)
	}
	f.deliver(a, third)
	// Now a lacks only pb, which b is still receiving (not stale): a must
	// get nothing from the seeder, and fetch pb from b later.
	time.Sleep(300 * time.Millisecond)
	if got := f.wait(t, a, 2); len(got) != 2 {
		t.Errorf("a got reveals %v after the swarm held or was receiving everything, want none beyond 2", got)
	}
	// Once b holds pb, the swarm holds every piece: the rarest piece a
	// lacks (pb, one copy) may be revealed to speed the last trades.
	f.deliver(b, pb)
	if got := f.wait(t, a, 3); got[2] != pb {
		t.Errorf("a's last reveal = %d, want %d", got[2], pb)
	}
	// The seeder's log counts each reveal under the rule that chose it:
	// three first reveals, then one rarest piece to each leecher (b, too,
	// lacks two pieces once the swarm holds all three).
	f.s.mu.Lock()
	byRule := f.s.byRule
	f.s.mu.Unlock()
	if want := [numRules]int{ruleFirst: 3, ruleRarest: 2}; byRule != want {
		t.Errorf("reveals by rule (first, stale again, rarest) = %v, want %v", byRule, want)
	}
}

// TestScheduleForgetsClosedLeechers: a leecher that leaves frees its
// pieces for others.
func TestScheduleForgetsClosedLeechers(t *testing.T) {
	f := newFakeSwarm(t, 2)
	a := &torrent.PeerConn{}
	f.s.add(a)
	pa := f.wait(t, a, 1)[0]
	f.s.remove(a)
	b := &torrent.PeerConn{}
	f.s.add(b)
	first := f.wait(t, b, 1)[0]
	f.deliver(b, first)
	got := f.wait(t, b, 2)
	if got[0] != pa && got[1] != pa {
		t.Errorf("b's reveals %v lack the piece %d its departed leecher was given", got, pa)
	}
}

// TestScheduleCountsCompletedLeechersThatLeave: a leecher that completed
// and left the seeder (mutually complete) still seeds; the seeder must not
// hand its pieces to a newcomer as if nobody held them.
func TestScheduleCountsCompletedLeechersThatLeave(t *testing.T) {
	f := newFakeSwarm(t, 2)
	a := &torrent.PeerConn{}
	f.s.add(a)
	for i := range 2 {
		f.deliver(a, f.wait(t, a, i+1)[i])
	}
	f.s.remove(a) // complete: anacrolix drops the mutually complete conn
	b := &torrent.PeerConn{}
	f.s.add(b)
	// The swarm holds both pieces, so b may get the rarest as a helper,
	// but a piece a had must not look lost: held stays at 2.
	f.s.mu.Lock()
	held := f.s.held
	f.s.mu.Unlock()
	if held != 2 {
		t.Errorf("held = %d after a complete leecher left, want 2", held)
	}
}

// TestScheduleKeepsNewPiecesForTheFront: a leecher that joined late (it
// holds less than half of what the median leecher holds) gets no piece the
// swarm lacks; the leechers at the front do. Once the swarm holds every
// piece, the late one gets the rarest.
func TestScheduleKeepsNewPiecesForTheFront(t *testing.T) {
	const pieces = 8
	f := newFakeSwarm(t, pieces)
	a, b, late := &torrent.PeerConn{}, &torrent.PeerConn{}, &torrent.PeerConn{}
	f.s.add(a)
	f.s.add(b)
	// a and b get pieces 0..3 from the seeder and trade them.
	for round := 1; round <= 2; round++ {
		for _, pc := range []*torrent.PeerConn{a, b} {
			got := f.wait(t, pc, round)
			f.deliver(pc, got[round-1])
		}
	}
	for _, pc := range []*torrent.PeerConn{a, b} {
		for i := range 4 {
			f.s.have(pc, i)
		}
	}
	f.s.add(late)
	// a and b go on getting new pieces; late gets nothing while 4..7 are
	// not all held.
	for round := 3; round <= 4; round++ {
		for _, pc := range []*torrent.PeerConn{a, b} {
			got := f.wait(t, pc, round)
			f.deliver(pc, got[round-1])
		}
	}
	f.mu.Lock()
	early := append([]int(nil), f.revealed[late]...)
	f.mu.Unlock()
	if len(early) != 0 {
		t.Fatalf("a leecher holding nothing got reveals %v while pieces were new to the swarm", early)
	}
	for _, pc := range []*torrent.PeerConn{a, b} {
		for i := range pieces {
			f.s.have(pc, i)
		}
	}
	got := f.wait(t, late, 1)
	if got[0] < 0 || got[0] >= pieces {
		t.Errorf("late leecher got reveal %d, want a piece", got[0])
	}
}

// TestScheduleIgnoresClaimsItCannotCheck (issue 15, finding 2): peers
// that advertise the reveal extension and claim every piece but one,
// without ever asking the seeder for anything, must not hold pieces back
// from a real leecher: it gets every piece revealed in turn, as if the
// fakes were not there.
func TestScheduleIgnoresClaimsItCannotCheck(t *testing.T) {
	const pieces, missing = 16, 7
	f := newFakeSwarm(t, pieces)
	for range 3 {
		fake := &torrent.PeerConn{}
		f.s.add(fake)
		bf := make([]bool, pieces)
		for i := range bf {
			bf[i] = i != missing
		}
		f.s.bitfield(fake, bf)
	}
	real := &torrent.PeerConn{}
	f.s.add(real)
	seen := map[int]bool{}
	for round := 1; round <= pieces; round++ {
		got := f.wait(t, real, round)
		p := got[round-1]
		if seen[p] {
			t.Fatalf("piece %d revealed twice to the only real leecher (reveals %v)", p, got)
		}
		seen[p] = true
		f.deliver(real, p)
	}
}

// TestScheduleTakesBackUnaskedReveals: a reveal the leecher never asks
// for is taken back once stale and goes to a leecher that asks; the
// silent one gets nothing more until it asks for something.
func TestScheduleTakesBackUnaskedReveals(t *testing.T) {
	const pieces = 8
	f := newFakeSwarm(t, pieces)
	f.s.mu.Lock()
	f.s.pieceTime = time.Millisecond // stale = 500 ms, the floor
	f.s.mu.Unlock()
	silent := &torrent.PeerConn{}
	f.s.add(silent)
	p := f.wait(t, silent, 1)[0]
	worker := &torrent.PeerConn{}
	f.s.add(worker)
	// The worker asks for and receives everything it is revealed; the
	// silent leecher's piece must reach it too.
	got := map[int]bool{}
	for round := 1; !got[p]; round++ {
		if round > pieces {
			t.Fatalf("worker got %d reveals without piece %d, which the silent leecher never asked for", round-1, p)
		}
		r := f.wait(t, worker, round)[round-1]
		got[r] = true
		f.deliver(worker, r)
	}
	time.Sleep(300 * time.Millisecond) // ticks: the silent one could be refilled
	f.mu.Lock()
	n := len(f.revealed[silent])
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("silent leecher got %d reveals, want 1: it never asked for the first", n)
	}
	// Once it asks for anything, it is served again.
	f.s.request(silent, p, 0, revealBlock)
	f.wait(t, silent, 2)
}

// TestScheduleServesStalledLeecherPlainly: a leecher that lacks pieces
// and has sent no Have or Request for stallAfter is revealed every piece,
// whatever the schedule would hold back from it (here: it is far behind
// the front while the swarm lacks pieces).
func TestScheduleServesStalledLeecherPlainly(t *testing.T) {
	const pieces = 8
	f := newFakeSwarm(t, pieces)
	f.s.mu.Lock()
	f.s.stallAfter = 300 * time.Millisecond
	f.s.mu.Unlock()
	a := &torrent.PeerConn{}
	f.s.add(a)
	for round := 1; round <= 4; round++ {
		f.deliver(a, f.wait(t, a, round)[round-1])
	}
	late := &torrent.PeerConn{}
	f.s.add(late)
	start := time.Now()
	// a keeps going (and stays active); late says nothing.
	for round := 5; round <= 6; round++ {
		f.deliver(a, f.wait(t, a, round)[round-1])
	}
	got := f.wait(t, late, pieces)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("late leecher was served everything after %s, before it stalled for 300ms", d)
	}
	all := map[int]bool{}
	for _, p := range got {
		all[p] = true
	}
	if len(all) != pieces {
		t.Errorf("stalled leecher got reveals %v, want every piece", got)
	}
}

// TestScheduleRarestOnlyForLeechersNobodyFeeds: once the swarm holds every
// piece, the seeder reveals the rarest piece a leecher lacks only while
// nobody else feeds that leecher. a claims a piece it got from b, so when
// the swarm comes to hold everything b gets a rarest piece at once and a
// gets nothing until a stale time has passed without a piece from others.
func TestScheduleRarestOnlyForLeechersNobodyFeeds(t *testing.T) {
	f := newFakeSwarm(t, 4)
	a, b := &torrent.PeerConn{}, &torrent.PeerConn{}
	f.s.add(a)
	f.s.add(b)
	r1, r2 := f.wait(t, a, 1)[0], f.wait(t, b, 1)[0]
	f.deliver(a, r1)
	f.deliver(b, r2)
	r3, r4 := f.wait(t, a, 2)[1], f.wait(t, b, 2)[1]
	f.s.have(a, r2) // from b, not from the seeder
	fed := time.Now()
	f.deliver(a, r3)
	f.deliver(b, r4) // the swarm holds every piece
	if got := f.wait(t, b, 3)[2]; got != r1 && got != r3 {
		t.Errorf("b's rarest reveal = %d, want %d or %d (what it lacks)", got, r1, r3)
	}
	f.s.mu.Lock()
	stale := f.s.stale()
	f.s.mu.Unlock()
	time.Sleep(stale / 2)
	f.mu.Lock()
	early := append([]int(nil), f.revealed[a]...)
	f.mu.Unlock()
	if len(early) != 2 && time.Since(fed) < stale {
		t.Fatalf("a got reveals %v within %s of a piece from b, want only its first two: b feeds it", early, time.Since(fed))
	}
	// Nobody has fed a for a stale time: it gets the piece it lacks.
	for deadline := time.Now().Add(stale + 2*time.Second); ; time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		got := append([]int(nil), f.revealed[a]...)
		f.mu.Unlock()
		if len(got) >= 3 {
			if got[2] != r4 {
				t.Errorf("a's rarest reveal = %d, want %d (the one piece it lacks)", got[2], r4)
			}
			if d := time.Since(fed); d < stale {
				t.Errorf("a got its rarest reveal %s after a piece from b, want at least the stale time %s", d, stale)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a, fed by nobody for %s, got no rarest reveal (reveals %v)", time.Since(fed), got)
		}
	}
}
