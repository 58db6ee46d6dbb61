// Package wake sends Wake-on-LAN magic packets. It owns the packet (six
// 0xff bytes, the target MAC sixteen times and an optional SecureOn
// password: 102, 106 or 108 bytes) and how it leaves this host: as a UDP
// datagram to the limited broadcast 255.255.255.255 out of one named
// interface (SO_BINDTODEVICE), and to each configured address, usually a
// subnet's directed broadcast such as 198.18.0.255.
//
// A sleeping NIC matches the pattern anywhere in the frame, so UDP port 9
// (discard) is only a convention; Config.Port changes it.
package wake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// DefaultPort is the UDP port magic packets go to (discard).
const DefaultPort = 9

// PacketLen is the length of a magic packet without a password.
const PacketLen = 6 + 16*6

// LimitedBroadcast is where packets sent out of Config.Interface go.
var LimitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// ErrBadPacket: a payload is not a magic packet (Parse).
var ErrBadPacket = errors.New("not a magic packet")

// ErrBadPassword: a SecureOn password is not 4 or 6 bytes.
var ErrBadPassword = errors.New("bad SecureOn password")

// Packet builds the magic packet for mac (6 bytes), followed by password
// (none, 4 or 6 bytes).
func Packet(mac net.HardwareAddr, password []byte) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("wake: MAC %v is not 6 bytes: Wake-on-LAN is for Ethernet MACs like aa:bb:cc:dd:ee:ff", mac)
	}
	switch len(password) {
	case 0, 4, 6:
	default:
		return nil, fmt.Errorf("%w: %d bytes, want 4 or 6", ErrBadPassword, len(password))
	}
	p := make([]byte, 0, PacketLen+len(password))
	p = append(p, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	for range 16 {
		p = append(p, mac...)
	}
	return append(p, password...), nil
}

// Parse reads a magic packet from a UDP payload: the MAC it wakes and
// its password (nil if none). Anything else wraps ErrBadPacket. It is for
// tests and tools that listen for packets; the payload is untrusted.
func Parse(b []byte) (net.HardwareAddr, []byte, error) {
	switch len(b) {
	case PacketLen, PacketLen + 4, PacketLen + 6:
	default:
		return nil, nil, fmt.Errorf("%w: %d bytes, want %d, %d or %d", ErrBadPacket, len(b), PacketLen, PacketLen+4, PacketLen+6)
	}
	if !bytes.Equal(b[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		return nil, nil, fmt.Errorf("%w: does not start with 6 bytes of 0xff", ErrBadPacket)
	}
	mac := b[6:12]
	for i := 1; i < 16; i++ {
		if !bytes.Equal(b[6+6*i:12+6*i], mac) {
			return nil, nil, fmt.Errorf("%w: repetition %d of the MAC differs", ErrBadPacket, i+1)
		}
	}
	var pw []byte
	if len(b) > PacketLen {
		pw = append(pw, b[PacketLen:]...)
	}
	return append(net.HardwareAddr(nil), mac...), pw, nil
}

// ParsePassword reads a SecureOn password written as a MAC
// ("aa:bb:cc:dd:ee:ff", 6 bytes) or an IPv4 address ("1.2.3.4", 4
// bytes), as ether-wake and ethtool write it. Empty means none.
func ParsePassword(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		b := a.As4()
		return b[:], nil
	}
	if hw, err := net.ParseMAC(s); err == nil && len(hw) == 6 {
		return hw, nil
	}
	return nil, fmt.Errorf("%w: %q: write 6 bytes like a MAC (aa:bb:cc:dd:ee:ff) or 4 like an IPv4 address (1.2.3.4)", ErrBadPassword, s)
}

// Config says where magic packets go.
type Config struct {
	// Interface, if set, gets every packet as a limited broadcast
	// (255.255.255.255) sent out of it, whatever the routing table says:
	// the interface facing the terminals.
	Interface string
	// Addrs also get every packet: a subnet's directed broadcast
	// (198.18.0.255 for 198.18.0.0/24; a router on the way must forward
	// directed broadcasts for a remote subnet) or one host's address.
	Addrs []netip.Addr
	// Port is the UDP port; 0 means DefaultPort.
	Port int
	// Password is the SecureOn password (none, 4 or 6 bytes).
	Password []byte
}

// Enabled reports whether the config sends anywhere.
func (c Config) Enabled() bool { return c.Interface != "" || len(c.Addrs) > 0 }

// Check validates the config.
func (c Config) Check() error {
	if !c.Enabled() {
		return errors.New("wake: no interface and no addresses: packets would go nowhere; set wake.interface or wake.broadcasts")
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("wake: port %d out of range", c.Port)
	}
	for _, a := range c.Addrs {
		if !a.Is4() {
			return fmt.Errorf("wake: %v is not an IPv4 address", a)
		}
	}
	if _, err := Packet(make(net.HardwareAddr, 6), c.Password); err != nil {
		return err
	}
	return nil
}

// Sent is one packet that left: the MAC it wakes and where it went
// (host:port).
type Sent struct {
	MAC string `json:"mac"`
	To  string `json:"to"`
}

// Send sends mac's magic packet to every destination of c. It returns
// what was sent; an error names the destinations that failed (what was
// sent elsewhere still counts).
func (c Config) Send(ctx context.Context, macs ...net.HardwareAddr) ([]Sent, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	packets := make([][]byte, len(macs))
	for i, mac := range macs {
		p, err := Packet(mac, c.Password)
		if err != nil {
			return nil, err
		}
		packets[i] = p
	}
	var sent []Sent
	var errs []error
	send := func(conn net.PacketConn, to netip.Addr) {
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, uint16(port)))
		for i, p := range packets {
			if _, err := conn.WriteTo(p, dst); err != nil {
				errs = append(errs, fmt.Errorf("wake: %s to %s: %w", macs[i], dst, err))
				continue
			}
			sent = append(sent, Sent{MAC: macs[i].String(), To: dst.String()})
		}
	}
	if c.Interface != "" {
		conn, err := listen(ctx, c.Interface)
		if err != nil {
			errs = append(errs, err)
		} else {
			send(conn, LimitedBroadcast)
			conn.Close()
		}
	}
	if len(c.Addrs) > 0 {
		conn, err := listen(ctx, "")
		if err != nil {
			errs = append(errs, err)
		} else {
			for _, a := range c.Addrs {
				send(conn, a)
			}
			conn.Close()
		}
	}
	return sent, errors.Join(errs...)
}

// listen opens a UDP socket that may send broadcasts, bound to ifname if
// it is not empty.
func listen(ctx context.Context, ifname string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = control(int(fd), ifname) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(ctx, "udp4", ":0")
	if err != nil {
		where := "any interface"
		if ifname != "" {
			where = "interface " + strconv.Quote(ifname)
		}
		return nil, fmt.Errorf("wake: UDP socket on %s: %w (check wake.interface: it must exist and be up)", where, err)
	}
	return conn, nil
}

// Broadcasts returns the directed broadcast address of each IPv4 subnet
// on interface ifname (none for /31 and /32).
func Broadcasts(ifname string) ([]netip.Addr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("wake: interface %q: %w (list them with ip link)", ifname, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("wake: addresses of %s: %w", ifname, err)
	}
	var ret []netip.Addr
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || !p.Addr().Is4() {
			continue
		}
		if b, ok := Broadcast(p); ok {
			ret = append(ret, b)
		}
	}
	return ret, nil
}

// Broadcast is the directed broadcast address of p's subnet; false for
// an IPv6 prefix, a /31 or a /32.
func Broadcast(p netip.Prefix) (netip.Addr, bool) {
	if !p.Addr().Is4() || p.Bits() > 30 || p.Bits() < 0 {
		return netip.Addr{}, false
	}
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}
