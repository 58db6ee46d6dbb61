package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// fakeRevealPeer is a raw peer-wire connection that plays a pxeswarm
// leecher to the seeder's schedule and lies: its extended handshake
// advertises the reveal extension, it claims every piece but missing (a
// Have for each, or one bitfield), and it never asks for a piece, whatever
// it is revealed. It
// reads (and drops) what the seeder sends until it is closed.
func fakeRevealPeer(t *testing.T, local, seeder string, img *image, missing int, bitfield bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp4", seeder)
	if err != nil {
		t.Fatalf("fake peer %s: dial seeder %s: %v", local, seeder, err)
	}
	t.Cleanup(func() { c.Close() })
	// BEP 3 handshake with the BEP 10 extension bit (reserved[5] 0x10).
	var hs bytes.Buffer
	hs.WriteString("\x13BitTorrent protocol")
	hs.Write([]byte{0, 0, 0, 0, 0, 0x10, 0, 0})
	hs.Write(img.im.InfoHash[:])
	hs.WriteString(fmt.Sprintf("-FK0001-%012d", fakeID.Add(1))) // distinct: anacrolix drops duplicate IDs
	ext, err := bencode.Marshal(pp.ExtendedHandshakeMessage{
		M: map[pp.ExtensionName]pp.ExtensionNumber{"pxeswarm_reveal": 1}, V: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	hs.Write(pp.Message{Type: pp.Extended, ExtendedID: pp.HandshakeExtendedID, ExtendedPayload: ext}.MustMarshalBinary())
	if bitfield {
		bf := make([]bool, img.im.NumPieces())
		for i := range bf {
			bf[i] = i != missing
		}
		hs.Write(pp.Message{Type: pp.Bitfield, Bitfield: bf}.MustMarshalBinary())
	} else {
		for i := range img.im.NumPieces() {
			if i != missing {
				hs.Write(pp.Message{Type: pp.Have, Index: pp.Integer(i)}.MustMarshalBinary())
			}
		}
	}
	if _, err := c.Write(hs.Bytes()); err != nil {
		t.Fatalf("fake peer %s: write: %v", local, err)
	}
	// The seeder's handshake back says it took the connection (a refused
	// one is closed instead).
	var back [68]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, back[:]); err != nil {
		t.Fatalf("fake peer %s: seeder's handshake: %v", local, err)
	}
	c.SetReadDeadline(time.Time{})
	go io.Copy(io.Discard, c)
}

var fakeID atomic.Int64

// maxFakeSlowdown bounds TestSwarmFakeRevealPeers' cases against its control.
const maxFakeSlowdown = 3.0

var tookRe = regexp.MustCompile(`fetch finished.* took=(\S+)`)

func (p *proc) took(t *testing.T) time.Duration {
	t.Helper()
	m := tookRe.FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no took= in fetch output")
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatalf("took=%s: %v", m[1], err)
	}
	return d
}

// TestSwarmFakeRevealPeers (issue 15, finding 2): connections that
// advertise the reveal extension, claim every piece but one (Haves from
// the first fake and every other one, a bitfield from the rest) and never ask
// for what they are revealed must not stall the seeder. Each run starts a
// fresh seeder (with the tracker), connects the fakes to it directly, each
// from its own loopback address, then times two real `pxeswarm fetch`
// processes; with 3, 10 and 50 fakes they must take no more than 3× the
// control without fakes.
//
// The bound is for a stall, not a speed goal (those are the bench's): the
// fault this test was written for put every case at its 20 s limit, at
// least 24.9× the control. On an idle machine all three cases run at
// 0.93-0.99× the control; in CI, with another package's tests on the same
// two cores, the 50-fake case twice came to 1.52-1.53×, which an earlier
// 1.5× bound failed.
func TestSwarmFakeRevealPeers(t *testing.T) {
	img := makeImage(t, []int64{64 << 20}, "256KiB")
	listenRe := regexp.MustCompile(`joined swarm.* listen=(\S+)`)
	// run returns how long the slower fetcher took, or limit if one did
	// not finish within it.
	run := func(fakes int, limit time.Duration) time.Duration {
		seed := img.seed(t, img.parts, true)
		defer func() {
			seed.cmd.Process.Kill()
			<-seed.done
		}()
		addr := seed.waitFor(t, listenRe, 10*time.Second)[1]
		for k := range fakes {
			fakeRevealPeer(t, fmt.Sprintf("127.3.%d.%d", k/250, k%250+1), addr, img, img.im.NumPieces()/2, k%2 == 1)
		}
		time.Sleep(200 * time.Millisecond) // the seeder reads the fakes' claims
		dir := t.TempDir()
		var fetchers []*proc
		for i := range 2 {
			ts := img.targets(dir, strconv.Itoa(i))
			// --peer as well as the tracker: a fetch whose first announce
			// fails waits a minute for the next (anacrolix), which once
			// left a fetcher with no peer at all for the whole run; the
			// test is about what the fakes do to the seeder.
			fetchers = append(fetchers, start(t, fetchArgs(img, ts, "--seed-for", "1s", "--peer", addr)...))
		}
		defer func() {
			for _, f := range fetchers {
				f.cmd.Process.Kill()
				<-f.done
			}
		}()
		deadline := time.After(limit)
		var took time.Duration
		for i, f := range fetchers {
			select {
			case <-f.done:
			case <-deadline:
				t.Errorf("%d fakes: fetcher %d did not finish within %s: the fakes stalled the seeder", fakes, i, limit)
				return limit
			}
			time.Sleep(10 * time.Millisecond) // let the output scanner drain
			if f.err != nil {
				t.Fatalf("%d fakes: fetcher %d: %v", fakes, i, f.err)
			}
			img.checkSame(t, img.targets(dir, strconv.Itoa(i)))
			took = max(took, f.took(t))
		}
		return took
	}
	// The machine may be busy with other work (a run was seen to take
	// 1.6× another of the same kind): each case runs twice and counts its
	// faster run. A stall the fakes cause shows in both.
	best := func(fakes int, limit time.Duration) time.Duration {
		return min(run(fakes, limit), run(fakes, limit))
	}
	control := best(0, 2*time.Minute)
	t.Logf("control (no fakes): two fetchers took %s", control)
	for _, n := range []int{3, 10, 50} {
		took := best(n, max(20*control, 20*time.Second))
		ratio := float64(took) / float64(control)
		t.Logf("%d fakes: two fetchers took %s, %.2f× the control run", n, took, ratio)
		if ratio > maxFakeSlowdown {
			t.Errorf("%d fake reveal peers delayed two fetchers to %.2f× the control run (%s against %s), want at most %g×: the fakes hold up the seeder's schedule", n, ratio, took, control, maxFakeSlowdown)
		}
	}
}
