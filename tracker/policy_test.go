package tracker

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/pxeswarm/pxeswarm/protocol"
)

func TestDefaultPolicyChoose(t *testing.T) {
	room := Group{Name: "room1", Prefixes: []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/25"),
		netip.MustParsePrefix("10.1.1.0/24"),
	}}
	other := Group{Name: "room2", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}}
	policy := DefaultPolicy{Groups: []Group{room, other}, SubnetBits: 24}

	// bucket is the expected rank: 0 group+complete, 1 group, 2 subnet+complete,
	// 3 subnet, 4 other+complete, 5 other; for asker 10.1.0.5:6881. -1:
	// never returned; -2: left out because the asker's group and subnet
	// hold enough peers (7 here, DefaultLocalEnough is 4).
	type entry struct {
		addr   string
		left   int64
		bucket int
	}
	swarmFor := []entry{
		{"10.1.1.7:1", 0, 0},               // same group, other subnet, seeder
		{"10.1.1.8:1", 50, 1},              // same group, leecher
		{"10.1.0.9:1", 50, 1},              // same group and subnet, leecher
		{"10.1.0.5:6882", 50, 1},           // asker's IP, other port: a different peer
		{"10.1.0.200:1", 0, 2},             // same /24, outside the group
		{"10.1.0.201:1", 50, 3},            // same /24, leecher
		{"10.1.0.202:1", -1, 3},            // same /24, left unknown counts as incomplete
		{"10.9.9.9:1", 0, 4},               // image host elsewhere, seeder
		{"10.2.0.3:1", 50, -2},             // another room's leecher
		{"10.1.0.5:6881", 50, -1},          // the asker: never returned
		{"[::ffff:10.1.0.5]:6881", 50, -1}, // the asker, IPv4-mapped
	}
	var swarm []Peer
	bucketOf := map[netip.AddrPort]int{}
	for _, e := range swarmFor {
		ap := netip.MustParseAddrPort(e.addr)
		swarm = append(swarm, Peer{Addr: ap, Left: e.left})
		bucketOf[ap] = e.bucket
	}
	asker := netip.MustParseAddrPort("10.1.0.5:6881")
	eligible := len(swarm) - 3

	for _, tc := range []struct {
		max, want int
	}{{100, eligible}, {eligible, eligible}, {5, 5}, {3, 3}, {1, 1}, {0, 0}, {-1, 0}} {
		for run := 0; run < 20; run++ {
			in := slices.Clone(swarm)
			got := policy.Choose(asker, in, tc.max)
			if len(got) != tc.want {
				t.Fatalf("Choose(%v, swarm, %d) returned %d peers, want %d", asker, tc.max, len(got), tc.want)
			}
			seen := map[netip.AddrPort]bool{}
			last := 0
			for i, p := range got {
				b := bucketOf[p.Addr]
				if b == -1 {
					t.Fatalf("Choose(%v, swarm, %d)[%d] = %v, the asker itself", asker, tc.max, i, p.Addr)
				}
				if b == -2 {
					t.Fatalf("Choose(%v, swarm, %d)[%d] = %v, another room's leecher, though the asker's room holds 7 peers", asker, tc.max, i, p.Addr)
				}
				if b < last {
					t.Fatalf("Choose(%v, swarm, %d)[%d] = %v in rank %d after rank %d, want ranks in order (groups, subnet, others; complete first)", asker, tc.max, i, p.Addr, b, last)
				}
				if seen[p.Addr] {
					t.Fatalf("Choose(%v, swarm, %d) returned %v twice", asker, tc.max, p.Addr)
				}
				seen[p.Addr] = true
				last = b
			}
			// Nothing better than the worst returned rank may be left out.
			for ap, b := range bucketOf {
				if b >= 0 && b < last && !seen[ap] {
					t.Fatalf("Choose(%v, swarm, %d) left out %v (rank %d) but returned rank %d", asker, tc.max, ap, b, last)
				}
			}
		}
	}

	t.Run("a small room gets the leechers elsewhere", func(t *testing.T) {
		asker := netip.MustParseAddrPort("10.4.0.1:1")
		swarm := []Peer{
			{Addr: netip.MustParseAddrPort("10.4.0.2:1"), Left: 10},
			{Addr: netip.MustParseAddrPort("10.4.0.3:1"), Left: 10},
			{Addr: netip.MustParseAddrPort("10.4.0.4:1"), Left: 10},
			{Addr: netip.MustParseAddrPort("10.5.0.2:1"), Left: 10},
			{Addr: netip.MustParseAddrPort("10.9.9.9:1"), Left: 0},
		}
		if got := policy.Choose(asker, slices.Clone(swarm), 100); len(got) != 5 {
			t.Errorf("with 3 peers in its subnet (fewer than %d), Choose returned %d peers, want all 5", DefaultLocalEnough, len(got))
		}
		swarm = append(swarm, Peer{Addr: netip.MustParseAddrPort("10.4.0.5:1"), Left: 10})
		got := policy.Choose(asker, slices.Clone(swarm), 100)
		if len(got) != 5 || slices.ContainsFunc(got, func(p Peer) bool { return p.Addr.Addr() == netip.MustParseAddr("10.5.0.2") }) {
			t.Errorf("with 4 peers in its subnet, Choose = %v, want them and the image host, not the leecher elsewhere", got)
		}
		// Complete peers elsewhere: the image host's seeder and a foreign
		// seeder stay, a pxeswarm machine that finished in another room
		// goes (its room has its own copies).
		id := func(role byte) (id [20]byte) {
			copy(id[:], protocol.PeerIDPrefix)
			id[len(protocol.PeerIDPrefix)] = role
			return id
		}
		withDone := append(slices.Clone(swarm), Peer{Addr: netip.MustParseAddrPort("10.5.0.3:1"), ID: id(protocol.RoleMachine)},
			Peer{Addr: netip.MustParseAddrPort("10.9.9.8:1"), ID: id(protocol.RoleSeeder)},
			Peer{Addr: netip.MustParseAddrPort("10.6.0.3:1"), ID: [20]byte{'-', 'q', 'B'}})
		got = policy.Choose(asker, withDone, 100)
		var elsewhere []string
		for _, p := range got {
			if !netip.MustParsePrefix("10.4.0.0/24").Contains(p.Addr.Addr()) {
				elsewhere = append(elsewhere, p.Addr.String())
			}
		}
		slices.Sort(elsewhere)
		if want := []string{"10.6.0.3:1", "10.9.9.8:1", "10.9.9.9:1"}; !slices.Equal(elsewhere, want) {
			t.Errorf("peers elsewhere returned to a room with 4 peers: %v, want %v (seeders and foreign complete peers, no other room's machines)", elsewhere, want)
		}
		never := DefaultPolicy{SubnetBits: 24, LocalEnough: -1}
		if got := never.Choose(asker, slices.Clone(swarm), 100); len(got) != 6 {
			t.Errorf("LocalEnough -1: Choose returned %d peers, want all 6", len(got))
		}
	})

	t.Run("asker in no group", func(t *testing.T) {
		asker := netip.MustParseAddrPort("10.3.0.1:1")
		swarm := []Peer{
			{Addr: netip.MustParseAddrPort("10.1.1.7:1"), Left: 0},
			{Addr: netip.MustParseAddrPort("10.3.0.2:1"), Left: 10},
		}
		got := policy.Choose(asker, swarm, 1)
		if len(got) != 1 || got[0].Addr != swarm[1].Addr {
			t.Errorf("Choose(%v, %v, 1) = %v, want the same-subnet leecher before a seeder elsewhere", asker, swarm, got)
		}
	})

	t.Run("subnet rank off", func(t *testing.T) {
		p := DefaultPolicy{}
		asker := netip.MustParseAddrPort("10.3.0.1:1")
		swarm := []Peer{
			{Addr: netip.MustParseAddrPort("10.3.0.2:1"), Left: 10},
			{Addr: netip.MustParseAddrPort("10.7.0.2:1"), Left: 0},
		}
		got := p.Choose(asker, swarm, 1)
		if len(got) != 1 || got[0].Addr != swarm[1].Addr {
			t.Errorf("DefaultPolicy{}.Choose(%v, %v, 1) = %v, want the seeder (no subnet rank)", asker, swarm, got)
		}
	})

	t.Run("shuffles within a rank", func(t *testing.T) {
		firsts := map[netip.AddrPort]bool{}
		for range 200 {
			got := policy.Choose(asker, slices.Clone(swarm), 100)
			firsts[got[1].Addr] = true // got[0] is the only rank-0 peer
		}
		if len(firsts) < 2 {
			t.Errorf("in 200 runs the second peer was always %v, want the rank shuffled", firsts)
		}
	})
}

// badPolicy returns the asker and more than max peers.
type badPolicy struct{}

func (badPolicy) Choose(asker netip.AddrPort, swarm []Peer, max int) []Peer {
	return append([]Peer{{Addr: asker}}, append(swarm, swarm...)...)
}

func TestTrackerEnforcesPolicyLimits(t *testing.T) {
	tr, _ := newTestTracker(t, Config{Policy: badPolicy{}})
	asker := netip.MustParseAddrPort("10.0.0.1:1")
	swarm := []Peer{
		{Addr: netip.MustParseAddrPort("10.0.0.2:1")},
		{Addr: netip.MustParseAddrPort("10.0.0.3:1")},
		{Addr: asker},
	}
	got := tr.choose(asker, swarm, 2)
	if len(got) != 2 {
		t.Fatalf("choose(%v, swarm, 2) with a bad policy = %d peers, want 2", asker, len(got))
	}
	for _, p := range got {
		if p.Addr == asker {
			t.Errorf("choose(%v, swarm, 2) with a bad policy returned the asker", asker)
		}
	}
}
