package tracker

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// Peer is one member of a swarm as the tracker last heard from it.
type Peer struct {
	Addr netip.AddrPort
	ID   [20]byte
	// Left is the number of bytes the peer still needs; -1 if unknown.
	Left                 int64
	Uploaded, Downloaded int64
	LastSeen             time.Time
}

// Complete reports whether the peer has the whole torrent (a seeder).
func (p Peer) Complete() bool { return p.Left == 0 }

// Policy chooses which peers an announcing peer is told about. It is the
// tracker's seam for peer choice: the swarm it gets is a fresh copy it may
// reorder, and it must return at most max peers. The tracker drops the
// asker and anything past max from whatever Choose returns.
type Policy interface {
	Choose(asker netip.AddrPort, swarm []Peer, max int) []Peer
}

// DefaultPolicy ranks peers by locality, then completeness, and shuffles
// within each rank so that load spreads:
//
//  1. peers sharing a configured Group with the asker (a classroom seeds
//     itself first),
//  2. peers in the asker's subnet,
//  3. everyone else;
//
// within each of those, complete peers (seeders) come before incomplete
// ones. The asker itself (same IP and port) is never returned.
//
// When the asker's group and subnet hold at least LocalEnough other peers,
// rank 3 keeps only the image host's seeders (peer ID role
// protocol.RoleSeeder) and complete foreign clients: a machine then trades
// within its own room, and pieces cross a router only from the image host,
// not from the other rooms' machines, finished or not. Anacrolix dials the peers
// it is told of in its own order (BEP 40's priority), not the tracker's,
// so ranking alone did not keep a room's trades inside it: with two rooms
// of 8 behind a router, 1.68 and 1.79 copies of the image crossed the
// router into each room and they took 1.87 × T_min (make bench, "two
// rooms"). With this rule at LocalEnough 4: 1.23–1.35 copies into each
// room, 1.39 and 1.44 × T_min (bench --only rooms, two runs). Rooms must
// still trade a little across the router: the image host's link gives
// both rooms together one copy per T_min. At LocalEnough 1 (a room's first
// machine alone sees the others) 1.05–1.11 copies crossed but the rooms
// took 1.51 and 1.78 × T_min, the image host sending up to 1.68 copies.
type DefaultPolicy struct {
	Groups []Group
	// SubnetBits is the IPv4 prefix length that counts as "same subnet"
	// (values above 32 mean 32). IPv6 peers use /64. 0 or less turns the
	// subnet rank off.
	SubnetBits int
	// LocalEnough is how many peers in the asker's group or subnet make
	// the incomplete peers elsewhere unnecessary; 0 means
	// DefaultLocalEnough, a negative value never leaves them out.
	LocalEnough int
}

// DefaultLocalEnough: a machine keeps 8 peer connections (imager's
// DefaultTuning); the first 4 machines of a room to announce also learn of
// the other rooms' machines, and trade across the router with them.
const DefaultLocalEnough = 4

const (
	rankGroup = iota
	rankSubnet
	rankOther
	numRanks
)

// Choose implements Policy.
func (p DefaultPolicy) Choose(asker netip.AddrPort, swarm []Peer, max int) []Peer {
	if max <= 0 {
		return nil
	}
	askerAddr := asker.Addr().Unmap()
	askerGroups := p.groupsOf(askerAddr)
	var buckets [numRanks * 2][]Peer
	for _, peer := range swarm {
		if sameAddrPort(peer.Addr, asker) {
			continue
		}
		a := peer.Addr.Addr().Unmap()
		rank := rankOther
		switch {
		case p.sharesGroup(askerGroups, a):
			rank = rankGroup
		case p.sameSubnet(askerAddr, a):
			rank = rankSubnet
		}
		i := rank * 2
		if !peer.Complete() {
			i++
		}
		buckets[i] = append(buckets[i], peer)
	}
	local := len(buckets[rankGroup*2]) + len(buckets[rankGroup*2+1]) + len(buckets[rankSubnet*2]) + len(buckets[rankSubnet*2+1])
	enough := p.LocalEnough
	if enough == 0 {
		enough = DefaultLocalEnough
	}
	if enough > 0 && local >= enough {
		buckets[rankOther*2+1] = nil
		buckets[rankOther*2] = slices.DeleteFunc(buckets[rankOther*2], func(p Peer) bool {
			return protocol.PeerRole(p.ID) == protocol.RoleMachine
		})
	}
	var out []Peer
	for _, b := range buckets {
		if len(out) >= max {
			break
		}
		rand.Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
		out = append(out, b[:min(len(b), max-len(out))]...)
	}
	return out
}

// groupsOf returns the indexes of the groups that contain a.
func (p DefaultPolicy) groupsOf(a netip.Addr) []int {
	var ret []int
	for i, g := range p.Groups {
		if g.contains(a) {
			ret = append(ret, i)
		}
	}
	return ret
}

func (p DefaultPolicy) sharesGroup(askerGroups []int, a netip.Addr) bool {
	for _, i := range askerGroups {
		if p.Groups[i].contains(a) {
			return true
		}
	}
	return false
}

func (p DefaultPolicy) sameSubnet(a, b netip.Addr) bool {
	if p.SubnetBits <= 0 || a.Is4() != b.Is4() || !a.IsValid() {
		return false
	}
	bits := min(p.SubnetBits, 32)
	if a.Is6() {
		bits = 64
	}
	pa, err := a.Prefix(bits)
	if err != nil {
		return false
	}
	return pa.Contains(b)
}

func (g Group) contains(a netip.Addr) bool {
	for _, pfx := range g.Prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// sameAddrPort compares two peer addresses, treating an IPv4-mapped IPv6
// address as the IPv4 address it carries.
func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}
