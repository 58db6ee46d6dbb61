package dhcp

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// seedPackets are real client packets (captured on a test LAN from busybox
// udhcpc, ISC dhclient, nclient4 and QEMU's UEFI iPXE ROM, see
// testdata/packets) plus built ones for the paths those do not take.
func seedPackets(f *testing.F) [][]byte {
	files, err := filepath.Glob("testdata/packets/*.bin")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed packets in testdata/packets: %v", err)
	}
	var seeds [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	build := func(typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) []byte {
		m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(typ)}, mods...)...)
		if err != nil {
			f.Fatal(err)
		}
		return m.ToBytes()
	}
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice()))
	req := dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.100")))
	seeds = append(seeds,
		build(dhcpv4.MessageTypeDiscover, pxeBIOS()...),
		build(dhcpv4.MessageTypeDiscover, append(pxeArch(7), withIPXE())...),
		build(dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(protocol.AgentVendorClass))),
		build(dhcpv4.MessageTypeRequest, sid, req),
		build(dhcpv4.MessageTypeRequest, append(pxeArch(7), dhcpv4.WithClientIP(net.ParseIP("198.18.0.100")))...),
		build(dhcpv4.MessageTypeRelease, sid, dhcpv4.WithClientIP(net.ParseIP("198.18.0.100"))),
		build(dhcpv4.MessageTypeDecline, sid, req),
		build(dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(net.ParseIP("198.18.0.30"))),
		build(dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.ParseIP("198.18.0.253")),
			dhcpv4.WithGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 3, 'a', 'b', 'c'})),
		build(dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(576)),
			dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, bytes.Repeat([]byte{7}, 250))),
	)
	return seeds
}

func FuzzFull(f *testing.F)  { fuzzHandler(f, Full) }
func FuzzProxy(f *testing.F) { fuzzHandler(f, Proxy) }

// fuzzHandler feeds arbitrary packets to a handler that already leased two
// addresses (so renewals, NAKs and releases have something to hit) and
// checks that it does not panic and that any reply parses, answers the
// request, fits the client's size limit and, in proxy mode, carries no
// address.
func fuzzHandler(f *testing.F, mode Mode) {
	for _, s := range seedPackets(f) {
		f.Add(s, false)
		if mode == Proxy {
			f.Add(s, true)
		}
	}
	cfg := Config{
		Mode:      mode,
		Interface: "br0",
		ServerIP:  tServer,
		PrefixLen: 24,
		ServerURL: tURL,
	}
	if mode == Full {
		// No LeaseFile: an fsync per input would slow the fuzzer to a crawl;
		// the file's parser has its own target.
		cfg.PoolStart, cfg.PoolEnd = netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("198.18.0.103")
		cfg.Reservations = map[string]netip.Addr{"52:54:00:00:00:09": netip.MustParseAddr("198.18.0.9")}
	}
	quiet := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, b []byte, pxePort bool) {
		h, err := cfg.Handler(quiet)
		if err != nil {
			t.Fatal(err)
		}
		if mode == Full {
			for n := 1; n <= 2; n++ { // a deterministic prelude: two leases
				off, _ := h.Reply(fuzzPkt(t, dhcpv4.MessageTypeDiscover, n), 67, fromNone)
				m, _ := dhcpv4.FromBytes(off)
				h.Reply(fuzzPkt(t, dhcpv4.MessageTypeRequest, n,
					dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice())),
					dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(m.YourIPAddr))), 67, fromNone)
			}
		}
		port, from := 67, fromNone
		if pxePort {
			port, from = PXEPort, netip.MustParseAddrPort("198.18.0.120:68")
		}
		out, to := h.Reply(b, port, from)
		if out == nil {
			return
		}
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatalf("answered a packet that does not parse (%v)", err)
		}
		r, err := dhcpv4.FromBytes(out)
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		checkWellFormed(t, req, r, out, mode)
		if !to.IsValid() || (to.Port() != 67 && to.Port() != 68 && to != from) {
			t.Errorf("reply sent to %v", to)
		}
		if mode == Full && r.MessageType() == dhcpv4.MessageTypeOffer {
			yi := toAddr(r.YourIPAddr)
			if yi != netip.MustParseAddr("198.18.0.9") && !inRange(yi, "198.18.0.100", "198.18.0.103") {
				t.Errorf("offered %v, outside the pool and reservations", yi)
			}
		}
	})
}

func fuzzPkt(t *testing.T, typ dhcpv4.MessageType, n int, mods ...dhcpv4.Modifier) []byte {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(n)), dhcpv4.WithMessageType(typ)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.ToBytes()
}

// FuzzLeaseFile: the lease file parser never panics, and what it
// accepts survives a save/load round trip.
func FuzzLeaseFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"leases":[{"mac":"52:54:00:00:00:01","ip":"198.18.0.100","expires":"2026-03-01T09:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"leases":[]}`))
	f.Add([]byte(`{"version":1,"leases":[{"mac":"52:54:00:00:00:01","ip":"::1","expires":"2026-03-01T09:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"leases":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		leases, err := parseLeases(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(leaseFile{Version: leaseVersion, Leases: leases})
		if err != nil {
			t.Fatal(err)
		}
		back, err := parseLeases(again)
		if err != nil || len(back) != len(leases) {
			t.Fatalf("accepted leases do not round-trip: %v (%d vs %d)", err, len(back), len(leases))
		}
		for i := range back {
			if back[i].MAC != leases[i].MAC || back[i].IP != leases[i].IP || !back[i].Expires.Equal(leases[i].Expires) {
				t.Fatalf("lease %d round-trips as %+v, want %+v", i, back[i], leases[i])
			}
		}
	})
}

// FuzzLeaseJournal: the journal parser never panics, what it accepts
// round-trips, and only a last line without its newline counts as torn.
func FuzzLeaseJournal(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:00:00:01","ip":"198.18.0.100","expires":"2026-03-01T09:00:00Z"}` + "\n"))
	f.Add([]byte(`{"mac":"52:54:00:00:00:01","ip":"198.18.0.100","drop":true}` + "\n" + `{"mac":"52:54:00:00:00:01","ip":"198.1`))
	f.Add([]byte("\n\n{\"mac\":\"xx\"}\n"))
	f.Add([]byte(`{"mac":"52:54:00:00:00:01","ip":"::1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, torn, err := parseJournal(b)
		if err != nil {
			return
		}
		if torn && bytes.HasSuffix(b, []byte("\n")) {
			t.Fatalf("a journal ending in a newline was called torn: %q", b)
		}
		var again []byte
		for _, e := range entries {
			line, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			again = append(append(again, line...), '\n')
		}
		back, torn2, err := parseJournal(again)
		if err != nil || torn2 || len(back) != len(entries) {
			t.Fatalf("accepted entries do not round-trip: %v, torn %v (%d vs %d)", err, torn2, len(back), len(entries))
		}
		for i := range back {
			if back[i].MAC != entries[i].MAC || back[i].IP != entries[i].IP || !back[i].Expires.Equal(entries[i].Expires) || back[i].Drop != entries[i].Drop {
				t.Fatalf("entry %d round-trips as %+v, want %+v", i, back[i], entries[i])
			}
		}
	})
}
