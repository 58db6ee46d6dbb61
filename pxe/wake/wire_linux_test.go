package wake

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/netns"
	"golang.org/x/sys/unix"
)

// frame is a UDP datagram as captured on the wire.
type frame struct {
	ethDst  net.HardwareAddr
	ipDst   netip.Addr
	udpPort int
	payload []byte
}

// capture opens a raw AF_PACKET socket on link inside ns and returns the
// UDP frames to port it reads for 1.5 s.
func capture(t *testing.T, ns *netns.NS, link string, port int) (ready <-chan struct{}, frames <-chan []frame) {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("raw socket on %s: %v", link, err)
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	rdy := make(chan struct{})
	out := make(chan []frame, 1)
	go func() {
		defer unix.Close(fd)
		var got []frame
		close(rdy)
		buf := make([]byte, 2048)
		deadline := time.Now().Add(1500 * time.Millisecond)
		for time.Now().Before(deadline) {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			if f, ok := parseFrame(buf[:n]); ok && f.udpPort == port {
				got = append(got, f)
			}
		}
		out <- got
	}()
	return rdy, out
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// parseFrame reads Ethernet + IPv4 + UDP.
func parseFrame(b []byte) (frame, bool) {
	if len(b) < 14+20+8 || binary.BigEndian.Uint16(b[12:14]) != unix.ETH_P_IP {
		return frame{}, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 {
		return frame{}, false
	}
	udp := ip[ihl:]
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < 8 || ulen > len(udp) {
		return frame{}, false
	}
	dst, _ := netip.AddrFromSlice(ip[16:20])
	return frame{ethDst: append(net.HardwareAddr(nil), b[0:6]...), ipDst: dst,
		udpPort: int(binary.BigEndian.Uint16(udp[2:4])), payload: append([]byte(nil), udp[8:ulen]...)}, true
}

// TestMagicPacketOnTheWire sends from a server namespace whose default
// route leads elsewhere (another interface) and captures on a host behind
// the bridge: the limited broadcast reaches the host only because the
// socket is bound to the bridge, the directed broadcast by routing. Each
// frame is an Ethernet broadcast whose payload is 6×0xff + 16×MAC.
func TestMagicPacketOnTheWire(t *testing.T) {
	netns.Require(t)
	lan := netns.NewLAN(t, "wol", netip.MustParsePrefix("198.18.0.1/24"))
	host := lan.AddHost(t, "pc", netip.MustParsePrefix("198.18.0.2/24"), netns.MAC(0x77))
	// The default route, which an unbound limited broadcast follows, goes
	// out of another interface (one end of a veth pair: this kernel has
	// no dummy interfaces).
	lan.NS.MustIP("link", "add", "up0", "type", "veth", "peer", "name", "up1")
	lan.NS.MustIP("addr", "add", "198.19.0.1/24", "dev", "up0")
	lan.NS.MustIP("link", "set", "up0", "up")
	lan.NS.MustIP("link", "set", "up1", "up")
	lan.NS.MustIP("route", "add", "default", "via", "198.19.0.254", "dev", "up0")

	target := net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}
	send := func(cfg Config) ([]Sent, []frame) {
		t.Helper()
		rdy, frames := capture(t, host.NS, host.Link, cfg.Port)
		<-rdy
		time.Sleep(100 * time.Millisecond)
		var sent []Sent
		err := lan.NS.Do(func() (err error) {
			sent, err = cfg.Send(context.Background(), target)
			return err
		})
		if err != nil {
			t.Fatalf("Send(%+v): %v", cfg, err)
		}
		return sent, <-frames
	}

	sent, frames := send(Config{Interface: lan.Bridge, Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.255")}, Port: 9})
	if len(sent) != 2 || sent[0].To != "255.255.255.255:9" || sent[1].To != "198.18.0.255:9" {
		t.Errorf("sent = %+v, want 255.255.255.255:9 and 198.18.0.255:9", sent)
	}
	seen := map[netip.Addr]bool{}
	for _, f := range frames {
		mac, pw, err := Parse(f.payload)
		if err != nil || mac.String() != target.String() || pw != nil {
			t.Errorf("frame to %v: payload %x is not the magic packet for %v: %v", f.ipDst, f.payload, target, err)
		}
		if f.ethDst.String() != "ff:ff:ff:ff:ff:ff" {
			t.Errorf("frame to %v went to Ethernet %v, want broadcast", f.ipDst, f.ethDst)
		}
		seen[f.ipDst] = true
	}
	for _, want := range []string{"255.255.255.255", "198.18.0.255"} {
		if !seen[netip.MustParseAddr(want)] {
			t.Errorf("no magic packet to %s seen on the host's wire (saw %d frames: %v)", want, len(frames), seen)
		}
	}

	// The control: the same limited broadcast from an unbound socket
	// follows the default route and never reaches the room.
	_, frames = send(Config{Addrs: []netip.Addr{LimitedBroadcast}, Port: 9})
	if len(frames) != 0 {
		t.Errorf("an unbound limited broadcast reached the host (%d frames): the bound case above proves nothing", len(frames))
	}
}
