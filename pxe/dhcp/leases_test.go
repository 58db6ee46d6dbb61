package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// getLease gets mac n an address from h the way a client does (DISCOVER,
// then REQUEST of the offered address); invalid if it gets none.
func getLease(t *testing.T, h *Handler, n int) netip.Addr {
	t.Helper()
	off, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(n)), 67, fromNone)
	if off == nil {
		return netip.Addr{}
	}
	ack, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(n),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr))), 67, fromNone)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		return netip.Addr{}
	}
	if !ack.YourIPAddr.Equal(off.YourIPAddr) {
		t.Errorf("REQUEST for offered %v got an ACK for %v", off.YourIPAddr, ack.YourIPAddr)
	}
	return toAddr(ack.YourIPAddr)
}

// renew sends a RENEWING request for ip from mac n; true on ACK.
func renew(t *testing.T, h *Handler, n int, ip netip.Addr) bool {
	t.Helper()
	ack, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(n), dhcpv4.WithClientIP(ip.AsSlice())), 67, netip.AddrPortFrom(ip, 68))
	return ack != nil && ack.MessageType() == dhcpv4.MessageTypeAck
}

// inode is the file's inode number: atomicfile's rename gives a new one.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// TestLeaseJournal: with a few hundred leases, a REQUEST appends one line
// to the journal; the lease file is not rewritten (same inode, same
// bytes). A restart replays the journal (renewed expiry times included)
// and folds it into the file; a line cut short by a crash is dropped, a
// bad line before the last stops the start; a long journal is folded in
// by itself.
func TestLeaseJournal(t *testing.T) {
	cfg := testConfig(t, Full)
	cfg.PoolStart, cfg.PoolEnd, cfg.PrefixLen = netip.MustParseAddr("198.18.1.0"), netip.MustParseAddr("198.18.2.255"), 16
	cfg.Router = netip.Addr{}
	h := newTestHandler(t, cfg)
	const n = 300
	ips := map[int]netip.Addr{}
	for i := 1; i <= n; i++ {
		m := net.HardwareAddr{0x52, 0x54, 0x00, 0, byte(i >> 8), byte(i)}
		off, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, m), 67, fromNone)
		if off == nil {
			t.Fatalf("no offer for client %d", i)
		}
		ack, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, m, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tServer.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr))), 67, fromNone)
		if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("no ACK for client %d", i)
		}
		ips[i] = toAddr(ack.YourIPAddr)
	}
	// 300 binds passed compactAfter(…) at least once: the file holds most.
	journal := cfg.LeaseFile + journalSuffix
	fileBefore, err := os.ReadFile(cfg.LeaseFile)
	if err != nil {
		t.Fatal(err)
	}
	ino := inode(t, cfg.LeaseFile)
	jBefore, _ := os.ReadFile(journal)

	// 50 renewals, 40 minutes on: 50 journal lines, the file untouched.
	h.now = func() time.Time { return tClock.Add(40 * time.Minute) }
	for i := 1; i <= 50; i++ {
		m := net.HardwareAddr{0x52, 0x54, 0x00, 0, byte(i >> 8), byte(i)}
		ack, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, m, dhcpv4.WithClientIP(ips[i].AsSlice())), 67, netip.AddrPortFrom(ips[i], 68))
		if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("renewal of client %d: %v", i, ack)
		}
	}
	fileAfter, _ := os.ReadFile(cfg.LeaseFile)
	if got := inode(t, cfg.LeaseFile); got != ino || string(fileAfter) != string(fileBefore) {
		t.Errorf("the lease file was rewritten by renewals (inode %d → %d, %d → %d bytes), want it untouched and the changes journaled",
			ino, got, len(fileBefore), len(fileAfter))
	}
	jAfter, _ := os.ReadFile(journal)
	if added := strings.Count(string(jAfter), "\n") - strings.Count(string(jBefore), "\n"); added != 50 {
		t.Errorf("journal grew by %d lines for 50 renewals, want 50", added)
	}

	// Restart: every lease back, the renewed ones with their new expiry.
	h.Close()
	h2 := newTestHandler(t, cfg)
	for i := 1; i <= n; i++ {
		le, ok := h2.leases.lease(net.HardwareAddr{0x52, 0x54, 0x00, 0, byte(i >> 8), byte(i)}.String())
		want := tClock.Add(time.Hour)
		if i <= 50 {
			want = tClock.Add(100 * time.Minute)
		}
		if !ok || le.IP != ips[i] || !le.Expires.Equal(want) {
			t.Fatalf("after restart client %d has %+v (found %v), want %v until %v", i, le, ok, ips[i], want)
		}
	}
	if b, _ := os.ReadFile(journal); len(b) != 0 {
		t.Errorf("journal after restart holds %d bytes, want it folded into the file", len(b))
	}

	// A crash mid-append: the cut line is dropped, the rest is kept.
	renew(t, h2, 1, ips[1]) // one whole line
	jf, err := os.OpenFile(journal, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	jf.Write([]byte(`{"mac":"52:54:00:00:00:02","ip":"198.1`))
	jf.Close()
	h3 := newTestHandler(t, cfg)
	if le, _ := h3.leases.lease(mac(2).String()); le.IP != ips[2] {
		t.Errorf("after a torn line client 2 has %v, want %v", le.IP, ips[2])
	}

	// A bad line that is not the last is corruption.
	os.WriteFile(journal, []byte("{\"mac\":\"xx\"}\n"+`{"mac":"52:54:00:00:00:02","ip":"198.18.1.9","expires":"2026-03-01T09:00:00Z"}`+"\n"), 0o600)
	if _, err := cfg.Handler(nil); !errors.Is(err, ErrLeaseFile) || !strings.Contains(err.Error(), "mv "+journal) {
		t.Errorf("Handler() with a bad journal line = %v, want ErrLeaseFile telling to move the journal aside", err)
	}
	os.Remove(journal)

	// A long journal is folded in by itself: compactAfter lines, then
	// one new file.
	h4 := newTestHandler(t, cfg)
	ino = inode(t, cfg.LeaseFile)
	for i := 0; i < compactAfter(n); i++ {
		renew(t, h4, 1, ips[1])
	}
	if inode(t, cfg.LeaseFile) != ino {
		t.Errorf("lease file rewritten before the journal reached %d lines", compactAfter(n))
	}
	renew(t, h4, 1, ips[1])
	if inode(t, cfg.LeaseFile) == ino {
		t.Errorf("lease file not rewritten after %d journal lines", compactAfter(n)+1)
	}
	if st, _ := os.Stat(journal); st.Size() != 0 {
		t.Errorf("journal holds %d bytes after the fold, want 0", st.Size())
	}
}

// TestPoolReserve: ten made-up clients cannot take a ten-address pool:
// the last address stays for a machine Priority names, whether they
// DISCOVER and REQUEST, REQUEST an address straight away, or only
// DISCOVER (holding offers they never take); a priority machine that
// finds every address offered takes an unanswered offer of a made-up
// client; an unanswered offer is free again after offerHold.
func TestPoolReserve(t *testing.T) {
	real1, real2 := mac(0xa1), mac(0xa2)
	cfg := testConfig(t, Full)
	cfg.Priority = func(m net.HardwareAddr) bool { return m.String() == real1.String() || m.String() == real2.String() }
	h := newTestHandler(t, cfg)
	if h.leases.reserve != 1 {
		t.Fatalf("default reserve of a 10-address pool = %d, want 1", h.leases.reserve)
	}
	got := 0
	for n := 1; n <= 10; n++ {
		if getLease(t, h, n).IsValid() {
			got++
		}
	}
	if got != 9 {
		t.Errorf("ten made-up clients got %d addresses from a 10-address pool with a reserve of 1, want 9", got)
	}
	// Straight to REQUEST (INIT-REBOOT) for the last free address: NAK.
	last := netip.MustParseAddr("198.18.0.109")
	nak, _ := ask(t, h, pkt(t, dhcpv4.MessageTypeRequest, mac(11), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(last.AsSlice()))), 67, fromNone)
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("a made-up client's REQUEST for the reserved %v = %v, want NAK", last, nak)
	}
	if ip := getLease(t, h, 0xa1); ip != last {
		t.Errorf("the priority machine got %v, want the reserved %v", ip, last)
	}
	// The made-up ones keep what they hold: a renewal is not a new address.
	if !renew(t, h, 1, netip.MustParseAddr("198.18.0.100")) {
		t.Error("a client holding an address could not renew it")
	}

	// Offers only: nine made-up clients DISCOVER and never REQUEST.
	cfg = testConfig(t, Full)
	cfg.Priority = func(m net.HardwareAddr) bool { return m.String() == real1.String() || m.String() == real2.String() }
	h = newTestHandler(t, cfg)
	for n := 1; n <= 12; n++ {
		ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(n)), 67, fromNone)
	}
	if len(h.leases.offers) != 9 {
		t.Errorf("made-up DISCOVERs hold %d offers, want 9", len(h.leases.offers))
	}
	if ip := getLease(t, h, 0xa1); !ip.IsValid() {
		t.Error("priority machine 1 got no address while made-up clients held offers")
	}
	// Nothing unoffered is left: the second takes the oldest made-up offer.
	ip2 := getLease(t, h, 0xa2)
	if !ip2.IsValid() {
		t.Fatal("priority machine 2 got no address: the unanswered offers were not recycled")
	}
	for n := 1; n <= 12; n++ {
		if o, ok := h.leases.offers[mac(n).String()]; ok && o.ip == ip2 {
			t.Errorf("made-up client %d still holds an offer of %v", n, ip2)
		}
	}
	// After offerHold the unanswered offers free their addresses.
	h.now = func() time.Time { return tClock.Add(offerHold + time.Second) }
	if ip := getLease(t, h, 20); !ip.IsValid() {
		t.Errorf("after offerHold a client found no address")
	}
}

// TestSeen: Seen gets every PXE client's and agent's DISCOVER and
// REQUEST, in both modes, before Boot; not plain clients.
func TestSeen(t *testing.T) {
	for _, mode := range []Mode{Full, Proxy} {
		var seen []string
		cfg := testConfig(t, mode)
		cfg.Seen = func(m net.HardwareAddr, arch uint16, agent bool) {
			seen = append(seen, fmt.Sprintf("seen %s %d %v", m, arch, agent))
		}
		cfg.Boot = func(m net.HardwareAddr) bool { seen = append(seen, "boot "+m.String()); return true }
		h := newTestHandler(t, cfg)
		ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(1), pxeArch(7)...), 67, fromNone)
		ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(2)), 67, fromNone) // plain client
		ask(t, h, pkt(t, dhcpv4.MessageTypeDiscover, mac(3), dhcpv4.WithOption(dhcpv4.OptClassIdentifier(protocol.AgentVendorClass))), 67, fromNone)
		want := "seen 52:54:00:00:00:01 7 false,boot 52:54:00:00:00:01,seen 52:54:00:00:00:03 65535 true"
		if got := strings.Join(seen, ","); got != want {
			t.Errorf("%s: calls %q, want %q", mode, got, want)
		}
	}
}
