package imager

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// FuzzLeecherReveal feeds whatever a peer that calls itself a scheduled
// seeder sends over the wire through the leecher's rewrite (reveals into
// Haves, claims of everything into claims of nothing). However the
// message lies, the rewrite never panics, never turns a message into a
// Have for a piece the torrent lacks, and lets no claim of everything
// through from a scheduled seeder: what that seeder holds reaches the
// leecher one reveal at a time.
func FuzzLeecherReveal(f *testing.F) {
	reveal := func(id byte, idx uint32) []byte {
		var b bytes.Buffer
		binary.Write(&b, binary.BigEndian, uint32(6))
		b.Write([]byte{byte(pp.Extended), id})
		binary.Write(&b, binary.BigEndian, idx)
		return b.Bytes()
	}
	f.Add(uint16(100), reveal(3, 7))
	f.Add(uint16(100), reveal(3, 100))
	f.Add(uint16(100), reveal(1, 7))
	f.Add(uint16(8), []byte{0, 0, 0, 2, byte(pp.Bitfield), 0xff})
	f.Add(uint16(8), []byte{0, 0, 0, 1, byte(pp.HaveAll)})
	f.Add(uint16(8), []byte{0, 0, 0, 5, byte(pp.Have), 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, pieces uint16, wire []byte) {
		n := int(pieces%1024) + 1
		var cb torrent.Callbacks
		leecherCallbacks(&cb, n)
		ltep := torrent.LocalLtepProtocolMap{Index: []pp.ExtensionName{pp.ExtensionNameMetadata, pp.ExtensionNamePex}, NumBuiltin: 2}
		pc := &torrent.PeerConn{LocalLtepProtocolMap: &ltep}
		copy(pc.PeerID[:], newPeerID(true))
		for _, h := range cb.PeerConnAdded {
			h(pc)
		}
		d := pp.Decoder{
			R:         bufio.NewReader(bytes.NewReader(wire)),
			Pool:      &sync.Pool{New: func() any { b := make([]byte, 1<<14); return &b }},
			MaxLength: 1 << 16,
		}
		for range 64 {
			var msg pp.Message
			if err := d.Decode(&msg); err != nil {
				return
			}
			before := msg.Type
			cb.ReadMessage(pc, &msg)
			switch {
			case msg.Type == pp.HaveAll:
				t.Fatalf("a scheduled seeder's HaveAll reached the leecher")
			case msg.Type == pp.Bitfield && slicesAny(msg.Bitfield):
				t.Fatalf("a scheduled seeder's bitfield reached the leecher with pieces set")
			case msg.Type == pp.Have && before != pp.Have && int(msg.Index) >= n:
				t.Fatalf("a reveal of piece %d became a Have in a torrent of %d pieces", msg.Index, n)
			}
		}
	})
}

func slicesAny(bf []bool) bool {
	for _, b := range bf {
		if b {
			return true
		}
	}
	return false
}
