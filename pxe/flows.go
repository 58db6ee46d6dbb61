package pxe

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// flows owns the who-fed-whom picture (GET /api/swarm, and "swarm" in the
// console's event stream): per machine, what its agent last reported it
// received from each source on its latest task. Only reports whose task
// token the HTTP layer checked reach it, so every edge into a machine is
// that machine's own word: a lying agent can misstate what it received,
// never what another machine received. It lives in memory (a restart
// starts the picture afresh) and holds one entry per machine.
type flows struct {
	mu sync.Mutex
	by map[string]flowEntry // by MAC
}

// flowEntry is one machine's latest word on its task.
type flowEntry struct {
	task, image string
	ip          netip.Addr // its reports' source address
	port        uint16     // its peer port, as it reported
	recv        []protocol.Received
	at          time.Time
}

// record keeps a token-checked report on task t (of machine mac), sent
// from address from. A report without sources (a failure report, say)
// keeps the sources the task reported before.
func (f *flows) record(mac string, t Task, from string, rep protocol.Report, now time.Time) {
	if t.ID == "" {
		return
	}
	ip, _ := netip.ParseAddr(from)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[string]flowEntry{}
	}
	e := f.by[mac]
	if e.task != t.ID {
		e = flowEntry{task: t.ID, image: t.Image}
	}
	e.ip, e.at = ip.Unmap(), now
	if rep.PeerPort != 0 {
		e.port = rep.PeerPort
	}
	if len(rep.Received) > 0 {
		e.recv = slices.Clone(rep.Received)
	}
	f.by[mac] = e
}

// SwarmGraph is one image's who-fed-whom picture: the machines whose
// latest task fetched it, the server, and per edge the useful bytes the
// receiving machine said it got from the source.
type SwarmGraph struct {
	Image string      `json:"image"`
	Nodes []SwarmNode `json:"nodes"`
	Edges []SwarmEdge `json:"edges"`
}

// Node kinds in a SwarmGraph.
const (
	NodeServer  = "server"  // the image hosts: the server's seeder and web seed
	NodeMachine = "machine" // a known machine (ID is its MAC)
	NodePeer    = "peer"    // an address no known machine reported from (ID is its IP:port)
)

// SwarmNode is a node of a SwarmGraph.
type SwarmNode struct {
	// ID is "server", a machine's MAC or a peer's IP:port.
	ID    string             `json:"id"`
	Kind  string             `json:"kind"`
	Name  string             `json:"name,omitempty"`  // the machine's name
	Task  string             `json:"task,omitempty"`  // the machine's task
	State protocol.TaskState `json:"state,omitempty"` // and its state
	// FromServer and FromPeers split what the machine received.
	FromServer int64 `json:"from_server"`
	FromPeers  int64 `json:"from_peers"`
}

// SwarmEdge says To received Bytes useful bytes from From (node IDs).
type SwarmEdge struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Bytes int64  `json:"bytes"`
}

// graphs draws one SwarmGraph per image, sorted by image. ms names the
// machines (and gives the addresses DHCP saw them at); states are the
// tasks' states by ID.
func (f *flows) graphs(ms []Machine, states map[string]protocol.TaskState) []SwarmGraph {
	f.mu.Lock()
	by := make(map[string]flowEntry, len(f.by))
	for mac, e := range f.by {
		by[mac] = e
	}
	f.mu.Unlock()
	names := map[string]string{}
	dhcpIP := map[netip.Addr][]string{}
	for _, m := range ms {
		names[m.MAC] = m.Name
		if ip, err := netip.ParseAddr(m.IP); err == nil {
			dhcpIP[ip.Unmap()] = append(dhcpIP[ip.Unmap()], m.MAC)
		}
	}
	reportIP := map[netip.Addr][]string{}
	for mac, e := range by {
		reportIP[e.ip] = append(reportIP[e.ip], mac)
	}
	// resolve names a source: the machine that reports from its address
	// with that peer port, else the only machine that reports from its
	// address (its peer port may have changed), else the only machine
	// DHCP gave it to, else the address itself.
	resolve := func(src string) (string, string) {
		if src == protocol.SourceServer {
			return NodeServer, NodeServer
		}
		ap, err := netip.ParseAddrPort(src)
		if err != nil {
			return src, NodePeer
		}
		ip := ap.Addr().Unmap()
		for _, mac := range reportIP[ip] {
			if by[mac].port == ap.Port() {
				return mac, NodeMachine
			}
		}
		if macs := reportIP[ip]; len(macs) == 1 {
			return macs[0], NodeMachine // one machine per address on a LAN
		}
		if macs := dhcpIP[ip]; len(macs) == 1 && len(reportIP[ip]) == 0 {
			return macs[0], NodeMachine
		}
		return netip.AddrPortFrom(ip, ap.Port()).String(), NodePeer
	}
	type graph struct {
		nodes map[string]*SwarmNode
		edges []SwarmEdge
	}
	gs := map[string]*graph{}
	for mac, e := range by {
		g := gs[e.image]
		if g == nil {
			g = &graph{nodes: map[string]*SwarmNode{NodeServer: {ID: NodeServer, Kind: NodeServer, Name: "server"}}}
			gs[e.image] = g
		}
		node := func(id, kind string) *SwarmNode {
			n := g.nodes[id]
			if n == nil {
				n = &SwarmNode{ID: id, Kind: kind, Name: names[id]}
				g.nodes[id] = n
			}
			return n
		}
		to := node(mac, NodeMachine)
		to.Task, to.State = e.task, states[e.task]
		for _, r := range e.recv {
			from, kind := resolve(r.From)
			if from == mac || r.Bytes == 0 {
				continue // its own address: nothing to draw
			}
			node(from, kind)
			if kind == NodeServer {
				to.FromServer += r.Bytes
			} else {
				to.FromPeers += r.Bytes
			}
			// Two sources may resolve to one node (a machine whose
			// peer port changed): add them up.
			if i := slices.IndexFunc(g.edges, func(x SwarmEdge) bool { return x.From == from && x.To == mac }); i >= 0 {
				g.edges[i].Bytes += r.Bytes
			} else {
				g.edges = append(g.edges, SwarmEdge{From: from, To: mac, Bytes: r.Bytes})
			}
		}
	}
	kindRank := map[string]int{NodeServer: 0, NodeMachine: 1, NodePeer: 2}
	ret := make([]SwarmGraph, 0, len(gs))
	for image, g := range gs {
		sg := SwarmGraph{Image: image, Nodes: make([]SwarmNode, 0, len(g.nodes)), Edges: g.edges}
		for _, n := range g.nodes {
			sg.Nodes = append(sg.Nodes, *n)
		}
		slices.SortFunc(sg.Nodes, func(a, b SwarmNode) int {
			return cmp.Or(cmp.Compare(kindRank[a.Kind], kindRank[b.Kind]), cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
		})
		slices.SortFunc(sg.Edges, func(a, b SwarmEdge) int { return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To)) })
		if sg.Edges == nil {
			sg.Edges = []SwarmEdge{}
		}
		ret = append(ret, sg)
	}
	slices.SortFunc(ret, func(a, b SwarmGraph) int { return cmp.Compare(a.Image, b.Image) })
	return ret
}
