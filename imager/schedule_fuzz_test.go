package imager

import (
	"testing"
	"time"

	"github.com/anacrolix/torrent"
)

// FuzzSchedule drives the seeder's reveal schedule with whatever peers
// claim over the wire: connections that advertise the reveal extension
// come and go and send Have, bitfield and Request messages for any piece
// index, and time passes.
// However they lie, the schedule never panics and its counts stay
// consistent with what the connected peers claimed and were revealed:
// only credited claims count as copies, and every outstanding reveal
// belongs to a connected leecher.
func FuzzSchedule(f *testing.F) {
	f.Add(uint8(8), []byte{0, 0, 1, 0, 2, 0, 3, 1, 0, 5, 2, 1, 255, 4, 0, 3, 1})
	f.Add(uint8(1), []byte{0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 2, 0, 0})
	f.Add(uint8(64), []byte{0, 1, 3, 1, 0, 0, 2, 0, 200, 4, 1})
	f.Add(uint8(3), []byte{0, 0, 0, 0, 1, 0, 4, 0, 24, 2, 0, 0, 5, 0, 100, 2, 1, 1, 3, 1, 7, 5, 0, 200, 1, 0, 0})
	f.Fuzz(func(t *testing.T, pieces uint8, ops []byte) {
		n := int(pieces%64) + 1
		s := newSchedule(n, func(i int) int64 { return int64(i%3+1) * revealBlock }, nil)
		defer s.close()
		s.send = func(*torrent.PeerConn, int) error { return nil }
		var pcs [4]*torrent.PeerConn
		for i := range pcs {
			pcs[i] = &torrent.PeerConn{}
		}
		now := time.Now()
		// Each op: kind, peer, then an argument byte.
		for len(ops) >= 3 {
			kind, pc, arg := ops[0]%6, pcs[ops[1]%4], ops[2]
			ops = ops[3:]
			switch kind {
			case 0:
				s.add(pc)
			case 1:
				s.remove(pc)
			case 2: // Have with any index, in range or not
				s.have(pc, int(int8(arg)))
			case 3: // a bitfield of any length
				bf := make([]bool, int(arg)%(2*n+1))
				for i := range bf {
					bf[i] = (int(arg)+i)%3 == 0
				}
				s.bitfield(pc, bf)
			case 4: // a Request for any index, block and length
				s.request(pc, int(int8(arg))%(n+2), int64(arg%4)*revealBlock/2, int64(arg%5)*revealBlock)
			case 5: // time passes: reveals go stale, leechers stall
				now = now.Add(time.Duration(arg) * 100 * time.Millisecond)
				s.mu.Lock()
				s.fill(now)
				s.mu.Unlock()
			}
		}
		// Every leecher goroutine ends with its connection.
		defer func() {
			for _, pc := range pcs {
				s.remove(pc)
			}
		}()
		s.mu.Lock()
		defer s.mu.Unlock()
		held := 0
		for i := range n {
			want, revealed := int32(0), int32(0)
			for _, l := range s.leechers {
				if l.cred[i] {
					want++
					if !l.has[i] {
						t.Fatalf("piece %d credited to a leecher that never claimed it", i)
					}
				}
				if _, ok := l.revealed[i]; ok {
					revealed++
				}
			}
			if s.pending[i] != revealed {
				t.Fatalf("piece %d: pending %d, but %d connected leechers hold a reveal of it", i, s.pending[i], revealed)
			}
			// A complete leecher that left still counts (it seeds on);
			// the schedule may hold more copies than the connected
			// peers, never fewer, and never a negative count.
			if s.avail[i] < want || s.avail[i] < 0 || s.pending[i] < 0 {
				t.Fatalf("piece %d: avail %d (connected peers hold %d), pending %d", i, s.avail[i], want, s.pending[i])
			}
			if s.avail[i] > 0 {
				held++
			}
		}
		if held != s.held {
			t.Fatalf("held = %d, want %d (pieces with a holder)", s.held, held)
		}
	})
}
