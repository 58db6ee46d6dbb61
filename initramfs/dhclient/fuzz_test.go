package dhclient

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// FuzzNewDiscovery: whatever OFFER and ACK a DHCP server (or a student's
// rogue one) sends, reading the lease never panics, and a lease it
// accepts has a real address with a sane prefix.
func FuzzNewDiscovery(f *testing.F) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	offer, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
		dhcpv4.WithYourIP(net.IPv4(198, 18, 0, 100)), dhcpv4.WithServerIP(net.IPv4(198, 18, 0, 1)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(198, 18, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(protocol.URLOption), []byte("http://198.18.0.1:8080/"))))
	ack, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(198, 18, 0, 100)), dhcpv4.WithLeaseTime(3600),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(198, 18, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(198, 18, 0, 1))))
	f.Add(offer.ToBytes(), ack.ToBytes())
	f.Add(offer.ToBytes(), offer.ToBytes())
	f.Add([]byte{}, []byte{1, 2, 3})
	cfg, _ := Config{Interface: "eth0"}.withDefaults()
	f.Fuzz(func(t *testing.T, ob, ab []byte) {
		o, err := dhcpv4.FromBytes(ob)
		if err != nil {
			return
		}
		a, err := dhcpv4.FromBytes(ab)
		if err != nil {
			return
		}
		d, err := newDiscovery(cfg, o, a)
		if err != nil {
			return
		}
		if !d.Addr.Addr().Is4() || d.Addr.Addr().IsUnspecified() || d.Addr.Bits() < 0 || d.Addr.Bits() > 32 {
			t.Fatalf("accepted lease %v from ACK %v", d.Addr, a.YourIPAddr)
		}
		if d.ServerURL != "" && d.ServerURLFrom != URLFromLease {
			t.Fatalf("server URL %q with source %q", d.ServerURL, d.ServerURLFrom)
		}
	})
}
