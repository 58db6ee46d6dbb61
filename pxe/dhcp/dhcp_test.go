package dhcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxeswarm/pxeswarm/initramfs/dhclient"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

var (
	tServer = netip.MustParseAddr("198.18.0.1")
	tRouter = netip.MustParseAddr("198.18.0.254")
	tURL    = "http://198.18.0.1:8080/"
	tBcast  = netip.MustParseAddrPort("255.255.255.255:68")
	tClock  = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
)

// testConfig is a /24 with a ten-address pool .100–.109.
func testConfig(t *testing.T, mode Mode) Config {
	c := Config{
		Mode:      mode,
		Interface: "br0",
		ServerIP:  tServer,
		PrefixLen: 24,
		ServerURL: tURL,
	}
	if mode == Full {
		c.PoolStart = netip.MustParseAddr("198.18.0.100")
		c.PoolEnd = netip.MustParseAddr("198.18.0.109")
		c.Router = tRouter
		c.DNS = []netip.Addr{tServer}
		c.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
	}
	return c
}

func newTestHandler(t *testing.T, c Config) *Handler {
	t.Helper()
	h, err := c.Handler(testlog.New(t))
	if err != nil {
		t.Fatalf("Handler() = %v", err)
	}
	h.now = func() time.Time { return tClock }
	t.Cleanup(func() { h.Close() })
	return h
}

func mac(n int) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, byte(n)} }

// pkt builds a client message.
func pkt(t *testing.T, typ dhcpv4.MessageType, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(hw),
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{1, 2, 3, byte(typ)}),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func pxeBIOS() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 0}),
	}
}

func pxeArch(a uint16) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{byte(a >> 8), byte(a)}),
	}
}

func withIPXE() dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))
}

// ask sends m to h on port from from and parses the reply (nil if none).
func ask(t *testing.T, h *Handler, m *dhcpv4.DHCPv4, port int, from netip.AddrPort) (*dhcpv4.DHCPv4, netip.AddrPort) {
	t.Helper()
	out, to := h.Reply(m.ToBytes(), port, from)
	if out == nil {
		return nil, to
	}
	r, err := dhcpv4.FromBytes(out)
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	checkWellFormed(t, m, r, out, h.cfg.Mode)
	return r, to
}

var fromNone = netip.MustParseAddrPort("0.0.0.0:68")

// checkWellFormed asserts what every reply must satisfy.
func checkWellFormed(t testing.TB, req, r *dhcpv4.DHCPv4, wire []byte, mode Mode) {
	t.Helper()
	if r.OpCode != dhcpv4.OpcodeBootReply {
		t.Errorf("reply op = %v, want BootReply", r.OpCode)
	}
	if r.TransactionID != req.TransactionID {
		t.Errorf("reply xid = %v, want %v", r.TransactionID, req.TransactionID)
	}
	if !bytes.Equal(r.ClientHWAddr, req.ClientHWAddr) {
		t.Errorf("reply chaddr = %v, want %v", r.ClientHWAddr, req.ClientHWAddr)
	}
	switch r.MessageType() {
	case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak:
	default:
		t.Errorf("reply type = %v, want OFFER, ACK or NAK", r.MessageType())
	}
	if got := toAddr(r.ServerIdentifier()); got != tServer {
		t.Errorf("reply server identifier = %v, want %v", got, tServer)
	}
	if max := maxReply(req); len(wire) > max {
		t.Errorf("reply is %d bytes, client accepts %d", len(wire), max)
	}
	if mode == Proxy {
		if !r.YourIPAddr.Equal(net.IPv4zero) {
			t.Errorf("proxy reply yiaddr = %v, want 0.0.0.0", r.YourIPAddr)
		}
		if r.MessageType() == dhcpv4.MessageTypeNak {
			t.Error("proxy sent a NAK")
		}
		if r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
			t.Error("proxy reply carries a lease time")
		}
	}
}

func opt(r *dhcpv4.DHCPv4, code uint8) string {
	return string(r.Options.Get(dhcpv4.GenericOptionCode(code)))
}

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"full", Full, false},
		{"proxy", Proxy, false},
		{"off", Off, false},
		{"", "", true},
		{"Full", "", true},
		{"dhcp", "", true},
	} {
		got, err := ParseMode(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParseMode(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && (!errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "full") || !strings.Contains(err.Error(), "proxy") || !strings.Contains(err.Error(), "off")) {
			t.Errorf("ParseMode(%q) error %q does not list the allowed modes", tc.in, err)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" = valid
	}{
		{"ok", func(c *Config) {}, ""},
		{"url option low", func(c *Config) { c.URLOption = 43 }, "224–254"},
		{"url option 255", func(c *Config) { c.URLOption = 255 }, "224–254"},
		{"url option 254", func(c *Config) { c.URLOption = 254 }, ""},
		{"pool outside", func(c *Config) { c.PoolEnd = netip.MustParseAddr("198.18.1.5") }, "not inside"},
		{"pool reversed", func(c *Config) { c.PoolStart, c.PoolEnd = c.PoolEnd, c.PoolStart }, "after pool end"},
		{"pool missing", func(c *Config) { c.PoolStart = netip.Addr{} }, "needs an address pool"},
		{"pool has broadcast", func(c *Config) { c.PoolEnd = netip.MustParseAddr("198.18.0.255") }, "broadcast"},
		{"router outside", func(c *Config) { c.Router = netip.MustParseAddr("198.19.0.1") }, "router"},
		{"bad prefix", func(c *Config) { c.PrefixLen = 31 }, "prefix length"},
		{"no server ip", func(c *Config) { c.ServerIP = netip.Addr{} }, "ServerIP"},
		{"short lease", func(c *Config) { c.LeaseTime = time.Second }, "lease time"},
		{"bad url", func(c *Config) { c.ServerURL = "198.18.0.1:8080" }, "server URL"},
		{"long boot file", func(c *Config) { c.BootFileUEFI = strings.Repeat("x", 128) }, "127 bytes"},
		{"bad reservation mac", func(c *Config) {
			c.Reservations = map[string]netip.Addr{"nope": netip.MustParseAddr("198.18.0.50")}
		}, "reservation"},
		{"reservation outside", func(c *Config) {
			c.Reservations = map[string]netip.Addr{"52:54:00:00:00:01": netip.MustParseAddr("198.19.0.50")}
		}, "reservation"},
		{"reservation on server", func(c *Config) {
			c.Reservations = map[string]netip.Addr{"52:54:00:00:00:01": tServer}
		}, "reservation"},
		{"reservation twice", func(c *Config) {
			c.Reservations = map[string]netip.Addr{
				"52:54:00:00:00:01": netip.MustParseAddr("198.18.0.50"),
				"52-54-00-00-00-02": netip.MustParseAddr("198.18.0.50"),
			}
		}, "reserved for both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t, Full)
			tc.change(&c)
			_, err := c.withDefaults()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("withDefaults() = %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrBadConfig)):
				t.Errorf("withDefaults() = %v, want ErrBadConfig mentioning %q", err, tc.want)
			}
		})
	}
	c, err := testConfig(t, Full).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := []any{DefaultURLOption, DefaultBootFileBIOS, DefaultBootFileUEFI, DefaultLeaseTime, tURL + "boot/{mac}.ipxe"}
	got := []any{c.URLOption, c.BootFileBIOS, c.BootFileUEFI, c.LeaseTime, c.ScriptURL}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

// TestFullReplies walks one table of single exchanges through a
// fresh full-mode handler each.
func TestFullReplies(t *testing.T) {
	type want struct {
		typ      dhcpv4.MessageType // MessageTypeNone: no reply
		yiaddr   string
		to       netip.AddrPort
		file     string // file field
		opt67    string
		siaddr   string
		vendor   string // option 60
		opt43    string
		leaseSet bool
	}
	off := func(yi string) want {
		return want{typ: dhcpv4.MessageTypeOffer, yiaddr: yi, to: tBcast, siaddr: tServer.String(), leaseSet: true}
	}
	uefi := off("198.18.0.100")
	uefi.file, uefi.opt67, uefi.vendor, uefi.opt43 = "ipxe.efi", "ipxe.efi", "PXEClient", "\x06\x01\x08\xff"
	bios := uefi
	bios.file, bios.opt67 = "undionly.kpxe", "undionly.kpxe"
	ipxe := uefi
	ipxe.file = tURL + "boot/52-54-00-00-00-01.ipxe"
	ipxe.opt67 = ipxe.file
	arm := off("198.18.0.100")
	arm.vendor, arm.opt43 = "PXEClient", "\x06\x01\x08\xff" // PXE-aware, but nothing to boot

	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		port int
		from netip.AddrPort
		want want
	}{
		{"plain discover", pkt(t, dhcpv4.MessageTypeDiscover, mac(1)), 67, fromNone, off("198.18.0.100")},
		{"discover asks for a free address", pkt(t, dhcpv4.MessageTypeDiscover, mac(1),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.105")))), 67, fromNone, off("198.18.0.105")},
		{"discover asks outside the pool", pkt(t, dhcpv4.MessageTypeDiscover, mac(1),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.5")))), 67, fromNone, off("198.18.0.100")},
		{"pxe bios", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeBIOS()...), 67, fromNone, bios},
		{"pxe uefi 7", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(7)...), 67, fromNone, uefi},
		{"pxe uefi 9", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(9)...), 67, fromNone, uefi},
		{"pxe arch from vendor class", pkt(t, dhcpv4.MessageTypeDiscover, mac(1),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016"))), 67, fromNone, uefi},
		{"pxe arm64 gets an address only", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(11)...), 67, fromNone, arm},
		{"ipxe gets the script", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), append(pxeBIOS(), withIPXE())...), 67, fromNone, ipxe},
		{"ipxe rfc3004 user class", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), append(pxeArch(7),
			dhcpv4.WithUserClass("iPXE", true))...), 67, fromNone, ipxe},
		{"request for someone else's server", pkt(t, dhcpv4.MessageTypeRequest, mac(1),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("198.18.0.2"))),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.100")))), 67, fromNone, want{}},
		{"init-reboot off network", pkt(t, dhcpv4.MessageTypeRequest, mac(1),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.19.7.7")))), 67, fromNone,
			want{typ: dhcpv4.MessageTypeNak, yiaddr: "0.0.0.0", to: tBcast, siaddr: "0.0.0.0"}},
		{"init-reboot free address granted", pkt(t, dhcpv4.MessageTypeRequest, mac(1),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.107")))), 67, fromNone,
			want{typ: dhcpv4.MessageTypeAck, yiaddr: "198.18.0.107", to: tBcast, siaddr: tServer.String(), leaseSet: true}},
		{"init-reboot outside pool", pkt(t, dhcpv4.MessageTypeRequest, mac(1),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.7")))), 67, fromNone,
			want{typ: dhcpv4.MessageTypeNak, yiaddr: "0.0.0.0", to: tBcast, siaddr: "0.0.0.0"}},
		{"request naming the server's own address", pkt(t, dhcpv4.MessageTypeRequest, mac(1),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(tServer.AsSlice()))), 67, fromNone,
			want{typ: dhcpv4.MessageTypeNak, yiaddr: "0.0.0.0", to: tBcast, siaddr: "0.0.0.0"}},
		{"request naming nothing", pkt(t, dhcpv4.MessageTypeRequest, mac(1)), 67, fromNone, want{}},
		{"inform", pkt(t, dhcpv4.MessageTypeInform, mac(1), dhcpv4.WithClientIP(net.ParseIP("198.18.0.30"))), 67,
			netip.MustParseAddrPort("198.18.0.30:68"),
			want{typ: dhcpv4.MessageTypeAck, yiaddr: "0.0.0.0", to: netip.MustParseAddrPort("198.18.0.30:68"), siaddr: tServer.String()}},
		{"relayed", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), dhcpv4.WithGatewayIP(net.ParseIP("198.18.0.253"))), 67,
			netip.MustParseAddrPort("198.18.0.253:67"),
			want{typ: dhcpv4.MessageTypeOffer, yiaddr: "198.18.0.100", to: netip.MustParseAddrPort("198.18.0.253:67"), siaddr: tServer.String(), leaseSet: true}},
		{"relayed from another network", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), dhcpv4.WithGatewayIP(net.ParseIP("198.19.0.1"))), 67,
			netip.MustParseAddrPort("198.19.0.1:67"), want{}},
		{"a server's offer", func() *dhcpv4.DHCPv4 {
			m := pkt(t, dhcpv4.MessageTypeOffer, mac(1))
			m.OpCode = dhcpv4.OpcodeBootReply
			return m
		}(), 67, fromNone, want{}},
		{"bootp without type", func() *dhcpv4.DHCPv4 {
			m := pkt(t, dhcpv4.MessageTypeDiscover, mac(1))
			m.Options.Del(dhcpv4.OptionDHCPMessageType)
			return m
		}(), 67, fromNone, want{}},
		{"token ring", func() *dhcpv4.DHCPv4 {
			m := pkt(t, dhcpv4.MessageTypeDiscover, mac(1))
			m.HWType = 6
			return m
		}(), 67, fromNone, want{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, testConfig(t, Full))
			r, to := ask(t, h, tc.req, tc.port, tc.from)
			if tc.want.typ == dhcpv4.MessageTypeNone {
				if r != nil {
					t.Fatalf("Reply(%s) = %v, want no reply", tc.name, r.Summary())
				}
				return
			}
			if r == nil {
				t.Fatalf("Reply(%s) = no reply, want %v", tc.name, tc.want.typ)
			}
			got := want{typ: r.MessageType(), yiaddr: r.YourIPAddr.String(), to: to, file: r.BootFileName,
				opt67: opt(r, 67), siaddr: r.ServerIPAddr.String(), vendor: opt(r, 60), opt43: opt(r, 43),
				leaseSet: r.Options.Has(dhcpv4.OptionIPAddressLeaseTime)}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("Reply(%s) (-want +got):\n%s", tc.name, diff)
			}
			switch r.MessageType() {
			case dhcpv4.MessageTypeNak:
				if r.Message() == "" || r.Options.Has(dhcpv4.GenericOptionCode(224)) || r.Options.Has(dhcpv4.OptionSubnetMask) {
					t.Errorf("NAK = %v, want only a message and the server identifier", r.Summary())
				}
			default:
				if got := opt(r, 224); got != tURL {
					t.Errorf("option 224 = %q, want %q", got, tURL)
				}
				if got := net.IP(r.SubnetMask()).String(); got != "255.255.255.0" {
					t.Errorf("subnet mask = %s, want 255.255.255.0", got)
				}
				if rs := r.Router(); len(rs) != 1 || !rs[0].Equal(tRouter.AsSlice()) {
					t.Errorf("router = %v, want %v", rs, tRouter)
				}
			}
		})
	}
}

// TestFullLeaseLife follows clients through offers, requests,
// renewals, release, decline, restarts and exhaustion.
func TestFullLeaseLife(t *testing.T) {
	cfg := testConfig(t, Full)
	h := newTestHandler(t, cfg)
	a1, a2 := getLease(t, h, 1), getLease(t, h, 2)
	if a1.String() != "198.18.0.100" || a2.String() != "198.18.0.101" {
		t.Fatalf("first leases = %v, %v; want .100, .101", a1, a2)
	}
	if again := getLease(t, h, 1); again != a1 {
		t.Errorf("same MAC again got %v, want %v", again, a1)
	}

	// Someone else asking for client 1's address is refused.
	nak, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(3),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a1.AsSlice()))), 67, fromNone)
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST by mac 3 for mac 1's %v = %v, want NAK", a1, nak)
	}

	// Renewal: unicast from ciaddr, answered to ciaddr, expiry moved on.
	h.now = func() time.Time { return tClock.Add(40 * time.Minute) }
	ack, to := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithClientIP(a1.AsSlice())), 67,
		netip.AddrPortFrom(a1, 68))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || to != netip.AddrPortFrom(a1, 68) || !ack.ClientIPAddr.Equal(a1.AsSlice()) {
		t.Fatalf("renewal = %v to %v, want ACK to %v:68 with ciaddr", ack, to, a1)
	}
	if le, _ := h.leases.lease(mac(1).String()); !le.Expires.Equal(tClock.Add(100 * time.Minute)) {
		t.Errorf("renewed lease expires %v, want %v", le.Expires, tClock.Add(100*time.Minute))
	}
	// Renewing an address that is not yours: NAK.
	nak, _ = ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithClientIP(a2.AsSlice())), 67, netip.AddrPortFrom(a2, 68))
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("renewal of mac 2's address by mac 1 = %v, want NAK", nak)
	}

	// Restart: a new handler on the same file remembers both, and a new
	// client does not get their addresses.
	h2 := newTestHandler(t, cfg)
	h2.now = h.now
	if a3 := getLease(t, h2, 3); a3 == a1 || a3 == a2 || !a3.IsValid() {
		t.Errorf("after restart mac 3 got %v, want neither %v nor %v", a3, a1, a2)
	}
	if again := getLease(t, h2, 2); again != a2 {
		t.Errorf("after restart mac 2 got %v, want %v", again, a2)
	}
	leases, _, err := readLeases(cfg.LeaseFile)
	if err != nil {
		t.Fatalf("lease file and journal do not parse: %v", err)
	}
	if len(leases) != 3 {
		t.Errorf("lease file and journal hold %d leases, want 3: %v", len(leases), leases)
	}
	if tmp, _ := filepath.Glob(filepath.Join(filepath.Dir(cfg.LeaseFile), ".*tmp*")); len(tmp) != 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}

	// RELEASE keeps the memory: mac 1 gets .100 back, a newcomer does not.
	ask(t, h2, pkt(t, dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(a1.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice()))), 67, netip.AddrPortFrom(a1, 68))
	if le, _ := h2.leases.lease(mac(1).String()); le.Expires.After(h2.now()) {
		t.Errorf("after RELEASE lease expires %v, want now", le.Expires)
	}
	if a4 := getLease(t, h2, 4); a4 == a1 {
		t.Errorf("newcomer got released %v while unused addresses remain", a4)
	}
	if again := getLease(t, h2, 1); again != a1 {
		t.Errorf("mac 1 after its RELEASE got %v, want %v", again, a1)
	}

	// DECLINE: the address is not offered to anyone for a while.
	off, _ := ask(t, h2, pkt(t, dhcpv4.MessageTypeDiscover, mac(5)), 67, fromNone)
	declined := toAddr(off.YourIPAddr)
	ask(t, h2, pkt(t, dhcpv4.MessageTypeRequest, mac(5), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(declined.AsSlice()))), 67, fromNone)
	ask(t, h2, pkt(t, dhcpv4.MessageTypeDecline, mac(5), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(declined.AsSlice()))), 67, fromNone)
	if again := getLease(t, h2, 5); again == declined {
		t.Errorf("after DECLINE of %v the same client was offered it again", declined)
	}

	// Exhaust the pool (10 addresses, one declined): silence, not a crash.
	got := map[netip.Addr]bool{}
	for n := 10; n < 30; n++ {
		if a := getLease(t, h2, n); a.IsValid() {
			if got[a] {
				t.Fatalf("address %v given twice", a)
			}
			got[a] = true
		}
	}
	if len(got) == 0 || len(got) > 10 {
		t.Errorf("newcomers got %d addresses from a 10-address pool", len(got))
	}
	if a := getLease(t, h2, 99); a.IsValid() {
		t.Errorf("full pool still offered %v", a)
	}

	// Expired leases are reclaimed, oldest first, once nothing is unused.
	h2.now = func() time.Time { return tClock.Add(48 * time.Hour) }
	if a := getLease(t, h2, 99); !a.IsValid() {
		t.Error("after every lease expired, no address for a newcomer")
	}
}

func TestReservations(t *testing.T) {
	cfg := testConfig(t, Full)
	res := netip.MustParseAddr("198.18.0.50") // outside the pool: allowed
	inPool := netip.MustParseAddr("198.18.0.100")
	cfg.Reservations = map[string]netip.Addr{"52-54-00-00-00-07": res, "52:54:00:00:00:08": inPool}
	h := newTestHandler(t, cfg)
	off, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(7)), 67, fromNone)
	if off == nil || toAddr(off.YourIPAddr) != res {
		t.Fatalf("reserved client's offer = %v, want %v", off, res)
	}
	off, _ = ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1)), 67, fromNone)
	if off == nil || toAddr(off.YourIPAddr) == inPool {
		t.Errorf("unreserved client's offer = %v, want not the reserved %v", off, inPool)
	}
	nak, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(res.AsSlice()))), 67, fromNone)
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for another's reservation = %v, want NAK", nak)
	}
	nak, _ = ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(7), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(inPool.Next().AsSlice()))), 67, fromNone)
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST by a reserved client for another address = %v, want NAK", nak)
	}
}

func TestProxyReplies(t *testing.T) {
	from4011 := netip.MustParseAddrPort("198.18.0.120:68")
	type want struct {
		typ  dhcpv4.MessageType
		to   netip.AddrPort
		file string
		url  string
	}
	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		port int
		from netip.AddrPort
		want want
	}{
		{"pxe bios discover", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeBIOS()...), 67, fromNone,
			want{dhcpv4.MessageTypeOffer, tBcast, "undionly.kpxe", tURL}},
		{"pxe uefi discover", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(7)...), 67, fromNone,
			want{dhcpv4.MessageTypeOffer, tBcast, "ipxe.efi", tURL}},
		{"ipxe discover", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), append(pxeBIOS(), withIPXE())...), 67, fromNone,
			want{dhcpv4.MessageTypeOffer, tBcast, tURL + "boot/52-54-00-00-00-01.ipxe", tURL}},
		{"agent discover", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), dhcpv4.WithOption(dhcpv4.OptClassIdentifier(protocol.AgentVendorClass))), 67, fromNone,
			want{dhcpv4.MessageTypeOffer, tBcast, "", tURL}},
		{"pxe request on 4011", pkt(t, dhcpv4.MessageTypeRequest, mac(1), append(pxeArch(7), dhcpv4.WithClientIP(from4011.Addr().AsSlice()))...), PXEPort, from4011,
			want{dhcpv4.MessageTypeAck, from4011, "ipxe.efi", tURL}},
		{"plain discover", pkt(t, dhcpv4.MessageTypeDiscover, mac(1)), 67, fromNone, want{}},
		{"other vendor", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("MSFT 5.0"))), 67, fromNone, want{}},
		{"pxe arm64", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(11)...), 67, fromNone, want{}},
		{"pxe request on 67", pkt(t, dhcpv4.MessageTypeRequest, mac(1), append(pxeBIOS(),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("198.18.0.2"))),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.120"))))...), 67, fromNone, want{}},
		{"pxe request naming us on 67", pkt(t, dhcpv4.MessageTypeRequest, mac(1), append(pxeBIOS(),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice())))...), 67, fromNone, want{}},
		{"agent renewal", pkt(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithOption(dhcpv4.OptClassIdentifier(protocol.AgentVendorClass)),
			dhcpv4.WithClientIP(from4011.Addr().AsSlice())), 67, from4011, want{}},
		{"pxe release", pkt(t, dhcpv4.MessageTypeRelease, mac(1), pxeBIOS()...), 67, fromNone, want{}},
		{"pxe inform", pkt(t, dhcpv4.MessageTypeInform, mac(1), pxeBIOS()...), 67, fromNone, want{}},
		{"pxe decline", pkt(t, dhcpv4.MessageTypeDecline, mac(1), pxeBIOS()...), 67, fromNone, want{}},
		{"pxe discover on 4011", pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeBIOS()...), PXEPort, from4011, want{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, testConfig(t, Proxy))
			r, to := ask(t, h, tc.req, tc.port, tc.from)
			if tc.want.typ == dhcpv4.MessageTypeNone {
				if r != nil {
					t.Fatalf("Reply(%s) = %v, want no reply", tc.name, r.Summary())
				}
				return
			}
			if r == nil {
				t.Fatalf("Reply(%s) = no reply, want %v", tc.name, tc.want.typ)
			}
			got := want{r.MessageType(), to, r.BootFileName, opt(r, 224)}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("Reply(%s) (-want +got):\n%s", tc.name, diff)
			}
			if tc.req.ClassIdentifier() != protocol.AgentVendorClass {
				if opt(r, 60) != "PXEClient" || opt(r, 43) != "\x06\x01\x08\xff" || !r.ServerIPAddr.Equal(tServer.AsSlice()) {
					t.Errorf("PXE reply: option 60 %q, 43 %x, siaddr %v; want PXEClient, 060108ff, %v", opt(r, 60), opt(r, 43), r.ServerIPAddr, tServer)
				}
			}
		})
	}
}

func TestOnBoot(t *testing.T) {
	type call struct {
		MAC  string
		Arch uint16
		IP   netip.Addr
	}
	var calls []call
	for _, mode := range []Mode{Full, Proxy} {
		cfg := testConfig(t, mode)
		cfg.OnBoot = func(m net.HardwareAddr, arch uint16, ip netip.Addr) {
			calls = append(calls, call{m.String(), arch, ip})
		}
		h := newTestHandler(t, cfg)
		ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(7)...), 67, fromNone)
		ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(2)), 67, fromNone) // not PXE: no call
	}
	want := []call{
		{"52:54:00:00:00:01", 7, netip.MustParseAddr("198.18.0.100")},
		{"52:54:00:00:00:01", 7, netip.Addr{}},
	}
	if diff := cmp.Diff(want, calls, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("OnBoot calls (-want +got):\n%s", diff)
	}
}

// TestBootFilter: a machine without a task gets no boot file (full:
// the address only; proxy: no reply), so its firmware boots the disk; one
// with a task gets iPXE; the agent's own requests are not filtered.
func TestBootFilter(t *testing.T) {
	withTask := mac(1)
	for _, mode := range []Mode{Full, Proxy} {
		cfg := testConfig(t, mode)
		cfg.Boot = func(m net.HardwareAddr) bool { return m.String() == withTask.String() }
		h := newTestHandler(t, cfg)
		for _, tc := range []struct {
			name     string
			m        *dhcpv4.DHCPv4
			wantFile string // "" and wantReply: an answer without a boot file
			reply    bool
		}{
			{"task, UEFI", pkt(t, dhcpv4.MessageTypeDiscover, withTask, pxeArch(7)...), "ipxe.efi", true},
			{"task, iPXE", pkt(t, dhcpv4.MessageTypeDiscover, withTask, append(pxeBIOS(), withIPXE())...), "http://198.18.0.1:8080/boot/52-54-00-00-00-01.ipxe", true},
			{"no task, UEFI", pkt(t, dhcpv4.MessageTypeDiscover, mac(2), pxeArch(7)...), "", mode == Full},
			{"no task, iPXE", pkt(t, dhcpv4.MessageTypeDiscover, mac(2), append(pxeBIOS(), withIPXE())...), "", mode == Full},
			{"no task, agent", pkt(t, dhcpv4.MessageTypeDiscover, mac(2), dhcpv4.WithOption(dhcpv4.OptClassIdentifier(protocol.AgentVendorClass))), "", true},
		} {
			r, _ := ask(t, h, tc.m, 67, fromNone)
			if (r != nil) != tc.reply {
				t.Errorf("%s %s: reply %v, want reply=%v", mode, tc.name, r, tc.reply)
				continue
			}
			if r == nil {
				continue
			}
			if got := r.BootFileNameOption(); got != tc.wantFile {
				t.Errorf("%s %s: boot file %q, want %q", mode, tc.name, got, tc.wantFile)
			}
			if mode == Proxy && tc.name == "no task, agent" && opt(r, 224) == "" {
				t.Errorf("proxy: the agent without a task still needs the URL option")
			}
		}
	}
}

// TestOversized sends hostile but parseable requests: replies stay
// within the client's limit and nothing panics.
func TestOversized(t *testing.T) {
	long := strings.Repeat("u", 255)
	many := make([]dhcpv4.Modifier, 0, 300)
	for c := 1; c < 254; c++ {
		if c == 53 || c == 60 || c == 93 || c == 77 || c == 57 || c == 55 || c == 50 || c == 54 || c == 61 || c == 82 || c == 97 {
			continue
		}
		many = append(many, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(c), []byte(strings.Repeat("x", 40))))
	}
	prl := make([]byte, 1000)
	for i := range prl {
		prl[i] = byte(i)
	}
	cfg := testConfig(t, Full)
	cfg.ServerURL = "http://198.18.0.1:8080/" + strings.Repeat("p", 200)
	cfg.ScriptURL = "http://198.18.0.1:8080/" + strings.Repeat("s", 200) + "/{mac}"
	for _, tc := range []struct {
		name string
		mods []dhcpv4.Modifier
	}{
		{"255-byte user class", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte(long))}},
		{"giant parameter list", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionParameterRequestList, prl)}},
		{"many options", many},
		{"1000-byte client id, max size 576", []dhcpv4.Modifier{
			dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, bytes.Repeat([]byte{1}, 1000)),
			dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(576))}},
		{"max size below legal", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(100))}},
		{"max size 0 bytes long", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionMaximumDHCPMessageSize, nil)}},
		{"relay info 255", []dhcpv4.Modifier{dhcpv4.WithGatewayIP(net.ParseIP("198.18.0.253")),
			dhcpv4.WithGeneric(dhcpv4.OptionRelayAgentInformation, bytes.Repeat([]byte{1}, 255))}},
		{"uuid and arch garbage", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, bytes.Repeat([]byte{0}, 300)),
			dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{7}),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:9999x"))}},
	} {
		for _, mode := range []Mode{Full, Proxy} {
			t.Run(string(mode)+"/"+tc.name, func(t *testing.T) {
				c := cfg
				c.Mode = mode
				h := newTestHandler(t, c)
				for _, base := range [][]dhcpv4.Modifier{nil, pxeBIOS(), append(pxeArch(7), withIPXE())} {
					m := pkt(t, dhcpv4.MessageTypeDiscover, mac(1), append(append([]dhcpv4.Modifier{}, base...), tc.mods...)...)
					ask(t, h, m, 67, fromNone) // checkWellFormed checks the size
				}
			})
		}
	}
	// With room to spare, nothing is shed.
	h := newTestHandler(t, cfg)
	r, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1), append(pxeBIOS(), dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1500)))...), 67, fromNone)
	if r == nil || opt(r, 224) != cfg.ServerURL || !r.Options.Has(dhcpv4.OptionDomainNameServer) {
		t.Errorf("reply with 1500 bytes allowed = %v, want URL and DNS kept", r)
	}
	// At 576 (no option 57), a 150-byte URL still fits once optional
	// options are shed; the boot file stays in the file field.
	cfg.ServerURL = "http://198.18.0.1:8080/" + strings.Repeat("p", 127)
	cfg.ScriptURL = ""
	h = newTestHandler(t, cfg)
	r, _ = ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(2), append(pxeBIOS(),
		dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, bytes.Repeat([]byte{1}, 200)))...), 67, fromNone)
	if r == nil || opt(r, 224) != cfg.ServerURL || r.BootFileName != "undionly.kpxe" {
		t.Fatalf("576-byte reply = %v, want the URL and boot file kept", r)
	}
	if r.Options.Has(dhcpv4.OptionClientIdentifier) || r.Options.Has(dhcpv4.OptionDomainNameServer) {
		t.Errorf("576-byte reply kept optional options: %v", r.Summary())
	}
	// Too long to fit at all: no reply rather than an oversized one.
	r, _ = ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(3), append(pxeBIOS(), withIPXE())...), 67, fromNone)
	if r != nil {
		t.Errorf("reply that cannot fit 576 bytes was sent: %d options", len(r.Options))
	}
}

func TestMalformed(t *testing.T) {
	good := pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeBIOS()...).ToBytes()
	cases := map[string][]byte{
		"empty":        {},
		"one byte":     {1},
		"header only":  good[:236],
		"bad cookie":   append(append(append([]byte{}, good[:236]...), 1, 2, 3, 4), good[240:]...),
		"no end":       good[:len(good)-1-bytes.Count(good[250:], []byte{0})],
		"length past":  append(append([]byte{}, good[:240]...), 53, 200, 1),
		"hlen 255":     func() []byte { b := append([]byte{}, good...); b[2] = 255; return b }(),
		"all ones":     bytes.Repeat([]byte{0xff}, 600),
		"huge":         append(append([]byte{}, good[:240]...), bytes.Repeat([]byte{0}, 60000)...),
		"zero options": append(append([]byte{}, good[:240]...), 255),
	}
	for _, mode := range []Mode{Full, Proxy} {
		h := newTestHandler(t, testConfig(t, mode))
		for name, b := range cases {
			if out, _ := h.Reply(b, 67, fromNone); out != nil && name != "huge" {
				if r, err := dhcpv4.FromBytes(out); err != nil || r.MessageType() == dhcpv4.MessageTypeNone {
					t.Errorf("%s: Reply(%s) = %d bytes that do not parse", mode, name, len(out))
				}
			}
		}
		// Still serving.
		if r, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(9), pxeBIOS()...), 67, fromNone); r == nil {
			t.Errorf("%s: no reply to a good DISCOVER after malformed ones", mode)
		}
	}
}

func TestLeaseFileCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":        "{not json",
		"truncated":      `{"version":1,"leases":[{"mac":"52:54:00:00:00:01","ip":"198.18.0.100","expires":"2026-03-01T09:00:00Z"}`,
		"bad mac":        `{"version":1,"leases":[{"mac":"xx","ip":"198.18.0.100","expires":"2026-03-01T09:00:00Z"}]}`,
		"duplicate ip":   `{"version":1,"leases":[{"mac":"52:54:00:00:00:01","ip":"198.18.0.100","expires":"2026-03-01T09:00:00Z"},{"mac":"52:54:00:00:00:02","ip":"198.18.0.100","expires":"2026-03-01T09:00:00Z"}]}`,
		"future version": `{"version":2,"leases":[]}`,
		"unknown field":  `{"version":1,"leases":[],"extra":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, Full)
			if err := os.WriteFile(cfg.LeaseFile, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := cfg.Handler(testlog.New(t))
			if !errors.Is(err, ErrLeaseFile) || !strings.Contains(err.Error(), "mv "+cfg.LeaseFile) {
				t.Errorf("Handler() with a %s lease file = %v, want ErrLeaseFile telling to move it aside", name, err)
			}
		})
	}
	// A lease from an old network is dropped, not fatal.
	cfg := testConfig(t, Full)
	os.WriteFile(cfg.LeaseFile, []byte(`{"version":1,"leases":[{"mac":"52:54:00:00:00:01","ip":"198.19.0.100","expires":"2026-03-01T09:00:00Z"}]}`), 0o600)
	h, err := cfg.Handler(testlog.New(t))
	if err != nil {
		t.Fatalf("Handler() with a lease outside the network = %v, want it dropped", err)
	}
	if _, ok := h.leases.lease("52:54:00:00:00:01"); ok {
		t.Error("lease outside the network was kept")
	}
}

// --- Live tests: the server as its own process in a namespace, real
// clients in theirs. ---

// serverEnv carries the Config (JSON) to the server process.
const serverEnv = "PXESWARM_TEST_DHCP_SERVER"

func TestMain(m *testing.M) {
	if js := os.Getenv(serverEnv); js != "" {
		serverProcess(js) // a live test's server; never returns
	}
	os.Exit(m.Run())
}

// serverProcess is the server process the live tests start inside a
// namespace (os/exec's helper-process pattern, entered from TestMain when
// serverEnv is set), so each server is a real process that can be
// stopped and restarted. OnBoot calls are printed as "ONBOOT ..." lines.
func serverProcess(js string) {
	var cfg Config
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bad config:", err)
		os.Exit(2)
	}
	cfg.OnBoot = func(m net.HardwareAddr, arch uint16, ip netip.Addr) {
		fmt.Fprintf(os.Stderr, "ONBOOT mac=%s arch=%d ip=%v\n", m, arch, ip)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := cfg.Start(ctx, log); err != nil {
		fmt.Fprintln(os.Stderr, "START FAILED:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// proc is a process started by a live test whose output is kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	done <-chan error
	mu   sync.Mutex
	out  []string
	eof  chan struct{}
}

// startProc starts cmd (killed at cleanup) and collects its output; the
// output is logged at cleanup if the test failed or runs verbose.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &proc{name: name, cmd: cmd, eof: make(chan struct{})}
	t.Cleanup(func() { // runs after netns.Start's cleanup has ended the process
		select {
		case <-p.eof:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: output still open 5s after the process ended", name)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	p.done = netns.Start(t, cmd)
	pw.Close()
	go func() {
		defer close(p.eof)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

// count is how many output lines contain s.
func (p *proc) count(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.out {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// waitFor waits until a line contains s; false on timeout or exit.
func (p *proc) waitFor(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.count(s) > 0 {
			return true
		}
		select {
		case <-p.eof:
			return p.count(s) > 0
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// stop ends the process with SIGTERM and returns its exit error.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("%s did not stop within 5s of SIGTERM", p.name)
		return nil
	}
}

// startServer runs cfg.Start in its own process inside ns and waits
// until it serves.
func startServer(t *testing.T, ns *netns.NS, cfg Config) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(context.Background(), exe)
	cmd.Env = append(os.Environ(), serverEnv+"="+string(js))
	p := startProc(t, "pxeswarm dhcp "+string(cfg.Mode), cmd)
	if !p.waitFor("dhcp: serving", 10*time.Second) {
		t.Fatalf("DHCP server did not start within 10s:\n%s", p.output())
	}
	return p
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	netns.Require(t)
	needs.Tool(t, tools...)
}

// runUdhcpc runs busybox udhcpc once on h and returns the environment its
// script saw at "bound".
func runUdhcpc(t *testing.T, h *netns.Host, extra ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\nenv > \""+dir+"/env.$1\"\n"), 0o755)
	args := append([]string{"udhcpc", "-f", "-q", "-n", "-i", h.Link, "-O", "224", "-s", script, "-t", "5", "-T", "1", "-A", "1"}, extra...)
	if out, err := h.Run(20*time.Second, "busybox", args...); err != nil {
		t.Fatalf("udhcpc on %s got no lease: %v\n%s", h.MAC, err, out)
	}
	return readEnv(t, filepath.Join(dir, "env.bound"))
}

// runDhclient runs ISC dhclient on h until its script sees BOUND, then
// stops it, and returns that environment. Its lease file is fresh, so it
// starts with a DISCOVER.
func runDhclient(t *testing.T, h *netns.Host) map[string]string {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "dhclient.conf")
	os.WriteFile(conf, []byte(`option pxeswarm-url code 224 = text;
request subnet-mask, broadcast-address, routers, domain-name-servers, dhcp-lease-time, pxeswarm-url;
timeout 15;
`), 0o644)
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\nenv > \""+dir+"/env.$reason\"\nexit 0\n"), 0o755)
	cmd := h.Command(context.Background(), "dhclient", "-d", "-1", "-v", "-cf", conf, "-sf", script,
		"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), h.Link)
	p := startProc(t, "dhclient "+h.MAC.String(), cmd)
	bound := filepath.Join(dir, "env.BOUND")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(bound); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dhclient on %s did not reach BOUND within 20s:\n%s", h.MAC, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the script finish writing
	p.stop(t)
	return readEnv(t, bound)
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("client script output: %v", err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	return env
}

func inRange(a netip.Addr, lo, hi string) bool {
	return a.IsValid() && !a.Less(netip.MustParseAddr(lo)) && !netip.MustParseAddr(hi).Less(a)
}

func readLeaseFile(t *testing.T, path string) map[string]netip.Addr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := parseLeases(b) // the file alone: Start writes it in full at stop
	if err != nil {
		t.Fatalf("lease file %s: %v\n%s", path, err, b)
	}
	m := map[string]netip.Addr{}
	for _, le := range leases {
		m[le.MAC] = le.IP
	}
	return m
}

// TestFullLive: busybox udhcpc and ISC dhclient get leases and the
// server URL from a pxeswarm process; garbage does not stop it; after a
// restart on the same lease file each gets its address back while a
// newcomer gets another one.
func TestFullLive(t *testing.T) {
	needTools(t, "busybox", "dhclient")
	lan := netns.NewLAN(t, "full", netip.MustParsePrefix("198.18.0.1/24"))
	cfg := Config{
		Mode:      Full,
		Interface: lan.Bridge,
		PoolStart: netip.MustParseAddr("198.18.0.100"),
		PoolEnd:   netip.MustParseAddr("198.18.0.150"),
		DNS:       []netip.Addr{tServer},
		LeaseTime: 10 * time.Minute,
		LeaseFile: filepath.Join(t.TempDir(), "leases.json"),
		ServerURL: tURL,
	}
	srv := startServer(t, lan.NS, cfg)
	c1 := lan.AddHost(t, "udhcpc", netip.Prefix{}, netns.MAC(0x11))
	c2 := lan.AddHost(t, "dhclient", netip.Prefix{}, netns.MAC(0x12))

	e1 := runUdhcpc(t, c1)
	ip1 := netip.MustParseAddr(e1["ip"])
	url1, _ := hex.DecodeString(e1["opt224"])
	if !inRange(ip1, "198.18.0.100", "198.18.0.150") || string(url1) != tURL || e1["serverid"] != "198.18.0.1" || e1["mask"] != "24" || e1["dns"] != "198.18.0.1" {
		t.Errorf("udhcpc lease: ip=%s opt224=%q serverid=%s mask=%s dns=%s; want a pool address, %q, 198.18.0.1, 24, 198.18.0.1",
			e1["ip"], url1, e1["serverid"], e1["mask"], e1["dns"], tURL)
	}
	e2 := runDhclient(t, c2)
	ip2, _ := netip.ParseAddr(e2["new_ip_address"])
	if !inRange(ip2, "198.18.0.100", "198.18.0.150") || ip2 == ip1 || e2["new_pxeswarm_url"] != tURL || e2["new_subnet_mask"] != "255.255.255.0" {
		t.Errorf("dhclient lease: ip=%s url=%q mask=%s; want a pool address other than %v, %q, 255.255.255.0",
			e2["new_ip_address"], e2["new_pxeswarm_url"], e2["new_subnet_mask"], ip1, tURL)
	}

	// Garbage and oversized options at the live server, broadcast and
	// unicast, from a host with an address.
	bad := lan.AddHost(t, "garbage", netip.MustParsePrefix("198.18.0.60/24"), netns.MAC(0x60))
	sendGarbage(t, bad)
	select {
	case err := <-srv.done:
		t.Fatalf("server exited after garbage: %v\n%s", err, srv.output())
	default:
	}
	if e := runUdhcpc(t, c1); e["ip"] != ip1.String() {
		t.Errorf("after garbage udhcpc got %s, want %v again", e["ip"], ip1)
	}

	if err := srv.stop(t); err != nil {
		t.Errorf("server exit after SIGTERM = %v, want status 0 (Start returns nil on cancel)", err)
	}
	leases := readLeaseFile(t, cfg.LeaseFile)
	if leases[c1.MAC.String()] != ip1 || leases[c2.MAC.String()] != ip2 {
		t.Errorf("lease file after stop = %v, want %s→%v and %s→%v", leases, c1.MAC, ip1, c2.MAC, ip2)
	}

	// Restart on the same file. The newcomer asks first: without the file
	// it would get the first pool address, which is ip1.
	srv = startServer(t, lan.NS, cfg)
	c3 := lan.AddHost(t, "newcomer", netip.Prefix{}, netns.MAC(0x13))
	e3 := runUdhcpc(t, c3)
	if e3["ip"] == ip1.String() || e3["ip"] == ip2.String() {
		t.Errorf("after restart the newcomer got %s, which belongs to %s or %s", e3["ip"], c1.MAC, c2.MAC)
	}
	if e := runUdhcpc(t, c1); e["ip"] != ip1.String() {
		t.Errorf("after restart udhcpc (%s) got %s, want %v back", c1.MAC, e["ip"], ip1)
	}
	if e := runDhclient(t, c2); e["new_ip_address"] != ip2.String() {
		t.Errorf("after restart dhclient (%s) got %s, want %v back", c2.MAC, e["new_ip_address"], ip2)
	}
	if n := srv.count("dhcp: bug"); n > 0 {
		t.Errorf("server logged %d panics", n)
	}
}

// sendGarbage sends malformed and oversized DHCP packets from h to port
// 67, both broadcast and to the server's address.
func sendGarbage(t *testing.T, h *netns.Host) {
	t.Helper()
	good := pkt(t, dhcpv4.MessageTypeDiscover, h.MAC, pxeBIOS()...).ToBytes()
	bigPRL := make([]byte, 255)
	for i := range bigPRL {
		bigPRL[i] = byte(i)
	}
	var many []dhcpv4.Modifier
	for c := 100; c < 200; c++ {
		many = append(many, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(c), bytes.Repeat([]byte{'m'}, 10)))
	}
	packets := [][]byte{
		{},
		{1, 1, 6},
		good[:100],
		bytes.Repeat([]byte{0xff}, 548),
		append(append([]byte{}, good[:240]...), 53, 250, 1),
		func() []byte { b := append([]byte{}, good...); b[236] = 0; return b }(),
		pkt(t, dhcpv4.MessageTypeDiscover, h.MAC, dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, bytes.Repeat([]byte{'u'}, 255))).ToBytes(),
		pkt(t, dhcpv4.MessageTypeDiscover, h.MAC, dhcpv4.WithGeneric(dhcpv4.OptionParameterRequestList, bigPRL), dhcpv4.WithGeneric(dhcpv4.OptionParameterRequestList, bigPRL)).ToBytes(),
		pkt(t, dhcpv4.MessageTypeDiscover, h.MAC, many...).ToBytes(),
		pkt(t, dhcpv4.MessageTypeRequest, h.MAC, dhcpv4.WithGeneric(dhcpv4.OptionRequestedIPAddress, []byte{1, 2})).ToBytes(),
		pkt(t, dhcpv4.MessageTypeDiscover, h.MAC, dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1))).ToBytes(),
		append(good[:len(good):len(good)], bytes.Repeat([]byte{0}, 8000)...),
	}
	var conn *net.UDPConn
	if err := h.Do(func() (err error) {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1) })
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "198.18.0.60:68")
		if err == nil {
			conn = pc.(*net.UDPConn)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, dst := range []string{"255.255.255.255:67", "198.18.0.1:67"} {
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst))
		for _, b := range packets {
			if _, err := conn.WriteToUDP(b, to); err != nil {
				t.Errorf("send %d garbage bytes to %s: %v", len(b), dst, err)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // let the server chew
}

// packetCapture records the DHCP packets that keep says to, read from a
// packet socket on the LAN's bridge (independent of the server's own code
// and logs).
type packetCapture struct {
	fd   int
	keep func(from, to netip.AddrPort) bool
	mu   sync.Mutex
	pkts []capturedDHCP
	done chan struct{}
}

type capturedDHCP struct {
	from, to netip.AddrPort
	msg      *dhcpv4.DHCPv4
	err      error
	raw      []byte // the UDP payload
}

// sentBy keeps what src sends from a DHCP server port.
func sentBy(src netip.Addr) func(from, to netip.AddrPort) bool {
	return func(from, to netip.AddrPort) bool {
		return from.Addr() == src && (from.Port() == serverPort || from.Port() == PXEPort)
	}
}

func captureDHCP(t *testing.T, lan *netns.LAN, keep func(from, to netip.AddrPort) bool) *packetCapture {
	t.Helper()
	c := &packetCapture{keep: keep, done: make(chan struct{})}
	// ETH_P_ALL: packets the host itself sends are only shown to
	// all-protocol taps (the kernel's dev_queue_xmit_nit).
	proto := int(htons(unix.ETH_P_ALL))
	err := lan.NS.Do(func() error {
		ifi, err := net.InterfaceByName(lan.Bridge)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatalf("packet capture on %s: %v", lan.Bridge, err)
	}
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // timeout: look at stop again
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Protocol == htons(unix.ETH_P_IP) {
				c.add(buf[:n])
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-c.done
		unix.Close(c.fd)
	})
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// add parses an IPv4/UDP datagram and keeps it if c.keep says so.
func (c *packetCapture) add(b []byte) {
	if len(b) < 28 || b[0]>>4 != 4 || b[9] != 17 {
		return
	}
	ihl := int(b[0]&0xf) * 4
	if len(b) < ihl+8 {
		return
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	u := b[ihl:]
	sport, dport := uint16(u[0])<<8|uint16(u[1]), uint16(u[2])<<8|uint16(u[3])
	if !c.keep(netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)) {
		return
	}
	payload := append([]byte{}, u[8:]...)
	m, err := dhcpv4.FromBytes(payload)
	c.mu.Lock()
	c.pkts = append(c.pkts, capturedDHCP{netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), m, err, payload})
	c.mu.Unlock()
}

func (c *packetCapture) packets() []capturedDHCP {
	time.Sleep(150 * time.Millisecond) // the reader's last timeout
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]capturedDHCP{}, c.pkts...)
}

// TestProxyLive: dnsmasq is the school's DHCP server, pxeswarm the
// proxyDHCP beside it on the same segment. Discover gets its address from
// dnsmasq and the URL from pxeswarm; PXE-style clients get the boot file
// by architecture; port 4011 is answered; pxeswarm never sends an
// address, a NAK or an ACK on port 67.
func TestProxyLive(t *testing.T) {
	needTools(t, "dnsmasq")
	lan := netns.NewLAN(t, "proxy", netip.MustParsePrefix("198.18.0.1/24"))
	school := lan.AddHost(t, "school", netip.MustParsePrefix("198.18.0.2/24"), netns.MAC(0x02))
	client := lan.AddHost(t, "client", netip.Prefix{}, netns.MAC(0x21))
	capture := captureDHCP(t, lan, sentBy(tServer))
	srv := startServer(t, lan.NS, Config{Mode: Proxy, Interface: lan.Bridge, ServerURL: tURL})
	log := testlog.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// Without the school's server, Discover says only a proxy answered.
	err := client.Do(func() error {
		_, err := dhclient.Discover(ctx, log, dhclient.Config{Interface: client.Link, Timeout: 300 * time.Millisecond, Retries: 2})
		return err
	})
	if !errors.Is(err, dhclient.ErrOnlyProxy) || !strings.Contains(err.Error(), "school's DHCP server") {
		t.Errorf("Discover with only the proxy = %v, want dhclient.ErrOnlyProxy pointing at the school's DHCP server", err)
	}

	dir := t.TempDir()
	leaseFile := filepath.Join(dir, "dnsmasq.leases")
	dm := startProc(t, "dnsmasq", school.Command(context.Background(), "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
		"--port=0", "--interface="+school.Link, "--bind-interfaces", "--dhcp-authoritative",
		"--dhcp-range=198.18.0.100,198.18.0.150,255.255.255.0,10m", "--dhcp-leasefile="+leaseFile,
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--user=root", "--log-dhcp", "--log-facility=-"))
	if !dm.waitFor("DHCP, IP range", 10*time.Second) {
		t.Fatalf("dnsmasq did not start:\n%s", dm.output())
	}

	// The agent: address from dnsmasq, URL from pxeswarm.
	var d *dhclient.Discovery
	if err := client.Do(func() (err error) {
		d, err = dhclient.Discover(ctx, log, dhclient.Config{Interface: client.Link, Timeout: time.Second, Retries: 3})
		return err
	}); err != nil {
		t.Fatalf("Discover beside dnsmasq: %v", err)
	}
	if !inRange(d.Addr.Addr(), "198.18.0.100", "198.18.0.150") || d.Addr.Bits() != 24 || d.ServerIP != netip.MustParseAddr("198.18.0.2") ||
		d.ServerURL != tURL || d.ServerURLFrom != dhclient.URLFromProxy || d.LeaseTime != 10*time.Minute {
		t.Errorf("Discover = addr %v server %v url %q from %q lease %v; want a dnsmasq address /24 from 198.18.0.2, %q from proxy, 10m",
			d.Addr, d.ServerIP, d.ServerURL, d.ServerURLFrom, d.LeaseTime, tURL)
	}
	if b, _ := os.ReadFile(leaseFile); !strings.Contains(string(b), client.MAC.String()+" "+d.Addr.Addr().String()) {
		t.Errorf("dnsmasq leases = %q, want %s %v", b, client.MAC, d.Addr.Addr())
	}

	// PXE-style DISCOVERs through nclient4's raw socket.
	var nc *nclient4.Client
	if err := client.Do(func() (err error) {
		nc, err = nclient4.New(client.Link, nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fromProxy := func(p *dhcpv4.DHCPv4) bool {
		return p.MessageType() == dhcpv4.MessageTypeOffer && toAddr(p.ServerIdentifier()) == tServer
	}
	for _, tc := range []struct {
		name string
		mods []dhcpv4.Modifier
		file string
	}{
		{"bios", pxeBIOS(), "undionly.kpxe"},
		{"uefi", pxeArch(7), "ipxe.efi"},
		{"ipxe", append(pxeBIOS(), withIPXE()), tURL + "boot/52-54-00-00-00-21.ipxe"},
	} {
		m, err := dhcpv4.NewDiscovery(client.MAC, tc.mods...)
		if err != nil {
			t.Fatal(err)
		}
		off, err := nc.SendAndRead(ctx, nclient4.DefaultServers, m, fromProxy)
		if err != nil {
			t.Errorf("%s: no proxy offer: %v", tc.name, err)
			continue
		}
		if off.BootFileName != tc.file || opt(off, 67) != tc.file || opt(off, 224) != tURL || opt(off, 60) != "PXEClient" ||
			opt(off, 43) != "\x06\x01\x08\xff" || !off.ServerIPAddr.Equal(tServer.AsSlice()) || !off.YourIPAddr.Equal(net.IPv4zero) {
			t.Errorf("%s: proxy offer = %s, want file %q, option 224, 60 PXEClient, 43 discovery control 8, siaddr %v, yiaddr 0",
				tc.name, off.Summary(), tc.file, tServer)
		}
	}
	// A plain client gets nothing from the proxy.
	m, _ := dhcpv4.NewDiscovery(client.MAC)
	sctx, scancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	if off, err := nc.SendAndRead(sctx, nclient4.DefaultServers, m, fromProxy); err == nil {
		t.Errorf("proxy answered a plain DISCOVER: %s", off.Summary())
	}
	scancel()

	// Port 4011: the firmware's REQUEST to the proxy, once it has its
	// address, is answered with an ACK to where it came from.
	client.MustIP("addr", "add", d.Addr.String(), "dev", client.Link)
	var conn *net.UDPConn
	if err := client.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(d.Addr.Addr(), 68)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := pkt(t, dhcpv4.MessageTypeRequest, client.MAC, append(pxeArch(7), dhcpv4.WithClientIP(d.Addr.Addr().AsSlice()),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)))...)
	if _, err := conn.WriteToUDPAddrPort(req.ToBytes(), netip.AddrPortFrom(tServer, PXEPort)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer on port 4011: %v", err)
	}
	ack, err := dhcpv4.FromBytes(buf[:n])
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || from.Port() != PXEPort || ack.BootFileName != "ipxe.efi" ||
		opt(ack, 224) != tURL || !ack.YourIPAddr.Equal(net.IPv4zero) || len(opt(ack, 97)) != 17 {
		t.Errorf("port 4011 answer from %v = %v (%v), want ACK from port 4011 with ipxe.efi, option 224, yiaddr 0, UUID echoed", from, ack, err)
	}

	// Everything pxeswarm sent: OFFERs on 67 and ACKs on 4011, never an
	// address, never a NAK.
	pkts := capture.packets()
	offers, acks := 0, 0
	for _, p := range pkts {
		switch {
		case p.err != nil:
			t.Errorf("pxeswarm sent an unparseable packet to %v: %v", p.to, p.err)
		case !p.msg.YourIPAddr.Equal(net.IPv4zero):
			t.Errorf("pxeswarm sent yiaddr %v in %v to %v", p.msg.YourIPAddr, p.msg.MessageType(), p.to)
		case p.msg.MessageType() == dhcpv4.MessageTypeOffer && p.from.Port() == 67:
			offers++
		case p.msg.MessageType() == dhcpv4.MessageTypeAck && p.from.Port() == PXEPort:
			acks++
		default:
			t.Errorf("pxeswarm sent %v from port %d to %v", p.msg.MessageType(), p.from.Port(), p.to)
		}
	}
	// ≥1 offer per Discover try (2 tries, then 1), 3 PXE offers, 1 ACK.
	if offers < 5 || acks != 1 {
		t.Errorf("captured %d offers and %d ACKs from pxeswarm, want ≥5 and 1", offers, acks)
	}
	if n := srv.count("ONBOOT mac=52:54:00:00:00:21"); n != 4 {
		t.Errorf("OnBoot called %d times for the PXE client, want 4 (3 offers, 1 ACK)", n)
	}
	if err := srv.stop(t); err != nil {
		t.Errorf("proxy exit after SIGTERM = %v, want status 0", err)
	}
}

func httpClient(a uint16) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("HTTPClient:Arch:%05d:UNDI:003001", a))),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{byte(a >> 8), byte(a)}),
	}
}

// TestHTTPBoot: a UEFI HTTP boot client (arch 16, vendor class
// HTTPClient, as OVMF sends it) gets the loader's URL as its boot file and
// HTTPClient echoed in option 60, in both modes; a PXE client beside it
// still gets the TFTP name; an HTTP client of another architecture, or any
// HTTP client when no URL is set, gets no boot file.
func TestHTTPBoot(t *testing.T) {
	const loader = "http://198.18.0.1:8080/boot/shimx64.efi"
	for _, mode := range []Mode{Full, Proxy} {
		cfg := testConfig(t, mode)
		cfg.HTTPBootURL = loader
		cfg.BootFileUEFI = "shimx64.efi"
		h := newTestHandler(t, cfg)
		noURL := testConfig(t, mode)
		hNoURL := newTestHandler(t, noURL)
		for _, tc := range []struct {
			name   string
			h      *Handler
			m      *dhcpv4.DHCPv4
			file   string
			vendor string
			reply  bool
		}{
			{"http x64", h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1), httpClient(16)...), loader, "HTTPClient", true},
			{"http arch from vendor class", h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1),
				dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001"))), loader, "HTTPClient", true},
			{"pxe x64 beside it", h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(7)...), "shimx64.efi", "PXEClient", true},
			{"http arm64", h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1), httpClient(19)...), "", "", mode == Full},
			{"http without URL", hNoURL, pkt(t, dhcpv4.MessageTypeDiscover, mac(1), httpClient(16)...), "", "", mode == Full},
		} {
			r, _ := ask(t, tc.h, tc.m, 67, fromNone)
			if (r != nil) != tc.reply {
				t.Errorf("%s %s: reply %v, want reply=%v", mode, tc.name, r, tc.reply)
				continue
			}
			if r == nil {
				continue
			}
			if got := r.BootFileNameOption(); got != tc.file || r.BootFileName != tc.file {
				t.Errorf("%s %s: boot file %q (file field %q), want %q", mode, tc.name, got, r.BootFileName, tc.file)
			}
			if got := opt(r, 60); got != tc.vendor {
				t.Errorf("%s %s: option 60 %q, want %q", mode, tc.name, got, tc.vendor)
			}
			if tc.vendor == "HTTPClient" && (r.Options.Has(dhcpv4.OptionVendorSpecificInformation) || r.Options.Has(dhcpv4.OptionTFTPServerName)) {
				t.Errorf("%s %s: HTTP boot reply carries PXE option 43 or TFTP option 66", mode, tc.name)
			}
		}
	}
	bad := testConfig(t, Full)
	bad.HTTPBootURL = "tftp://198.18.0.1/shimx64.efi"
	if _, err := bad.Handler(testlog.New(t)); !errors.Is(err, ErrBadConfig) {
		t.Errorf("Handler with a tftp:// HTTP boot URL = %v, want ErrBadConfig", err)
	}
}
