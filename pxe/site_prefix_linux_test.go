package pxe

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/netns"
)

// TestSitePrefixFromInterface: in full mode without dhcp.prefix_len, the
// subnet handed out is the serving interface's own (a /23 here), not a
// guessed /24: the pool may then lie in the other half of the /23. A
// prefix_len the site gives stays, and a pool outside the interface's
// subnet is refused once the interface is read.
func TestSitePrefixFromInterface(t *testing.T) {
	netns.Require(t)
	lan := netns.NewLAN(t, "pfx", netip.MustParsePrefix("198.18.2.1/23"))
	site := func(prefixLen int, start, end string) *Site {
		s := &Site{StateDir: t.TempDir(), Interface: lan.Bridge,
			DHCP:   SiteDHCP{Mode: "full", PoolStart: netip.MustParseAddr(start), PoolEnd: netip.MustParseAddr(end), PrefixLen: prefixLen},
			Images: []SiteImage{{Source: []string{"/srv/lab.img"}}}}
		s.ApplyDefaults()
		if err := s.Check(); err != nil {
			t.Fatalf("Check() before the interface is read = %v", err)
		}
		return s
	}
	in := func(s *Site) error { return lan.NS.Do(s.prepareHost) }

	s := site(0, "198.18.3.10", "198.18.3.20")
	if err := in(s); err != nil {
		t.Fatalf("prepareHost() = %v, want the pool accepted in the interface's /23", err)
	}
	if s.DHCP.PrefixLen != 23 || s.Address != netip.MustParseAddr("198.18.2.1") || s.PublicURL != "http://198.18.2.1:8080" {
		t.Errorf("after prepareHost: prefix_len %d, address %v, public_url %s; want 23, 198.18.2.1, http://198.18.2.1:8080",
			s.DHCP.PrefixLen, s.Address, s.PublicURL)
	}

	s = site(22, "198.18.3.10", "198.18.3.20")
	if err := in(s); err != nil || s.DHCP.PrefixLen != 22 {
		t.Errorf("prepareHost() with prefix_len 22 = %v, prefix_len %d; want the site's 22 kept", err, s.DHCP.PrefixLen)
	}

	s = site(0, "198.18.4.10", "198.18.4.20")
	if err := in(s); err == nil || !strings.Contains(err.Error(), "not in the pool's subnet 198.18.4.0/23") {
		t.Errorf("prepareHost() with a pool outside the interface's /23 = %v, want the address named outside the pool's subnet", err)
	}

	s = site(0, "198.18.3.10", "198.18.3.20")
	s.Address = netip.MustParseAddr("198.18.3.1")
	if err := in(s); err == nil || !strings.Contains(err.Error(), "198.18.2.1/23") {
		t.Errorf("prepareHost() with an address not on the interface = %v, want an error listing the interface's addresses", err)
	}
}
