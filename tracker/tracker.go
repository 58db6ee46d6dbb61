// Package tracker owns the LAN tracker: HTTP announce (BEP 3, compact
// peers per BEP 23) and scrape (BEP 48), the allow-list of published
// info-hashes, peer choice (complete peers, same subnet, configured groups)
// and per-swarm statistics. It does not own seeding or torrents: callers
// publish info-hashes they seed elsewhere (package imager).
//
// The announce path is anacrolix's own handler
// (github.com/anacrolix/torrent/tracker/http/server) in front of our
// in-memory trackerServer.AnnounceTracker; see http.go for the wrapper that
// fixes its quirks.
package tracker

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Defaults applied by New.
const (
	DefaultInterval      = 10 * time.Second
	DefaultMaxPeers      = 200
	DefaultMaxSwarmPeers = 4096
	// DefaultMaxPeersPerHost: a terminal runs one agent, so one peer per
	// swarm; a few more leave room for a restarted client whose old entry
	// has not expired yet.
	DefaultMaxPeersPerHost = 4
	DefaultSubnetBits      = 24
)

// Config configures a Tracker. The zero value is usable: New fills in the
// defaults.
type Config struct {
	// Listen is the TCP address Start listens on, e.g. ":6969".
	Listen string
	// Interval is the announce interval told to clients (whole seconds,
	// rounded up; at least 1s). Default 10s: on a LAN, peers should learn
	// about each other quickly.
	Interval time.Duration
	// PeerTTL: a peer that has not announced for this long is dropped.
	// Default 3×Interval; must not be shorter than Interval.
	PeerTTL time.Duration
	// MaxPeers is the most peers in one announce reply (a smaller numwant
	// wins). Default 200.
	MaxPeers int
	// MaxSwarmPeers caps the peers tracked per swarm, so memory stays
	// bounded; announces from new peers past it get a failure reason.
	// Default 4096.
	MaxSwarmPeers int
	// MaxPeersPerHost caps the peers one address may hold in a swarm, so
	// one LAN host cannot fill the swarm with made-up peers and lock the
	// real machines out. Trusted and loopback addresses (the image host
	// itself) are not capped. Default 4.
	MaxPeersPerHost int
	// Trusted are the image hosts' addresses: their peers (the seeders)
	// come first in every announce reply, whatever else the swarm holds,
	// so fake complete peers cannot crowd them out of replies.
	Trusted []netip.Addr
	// Groups are named sets of prefixes (a classroom, a subnet); the
	// default policy tells a peer about its own group first.
	Groups []Group
	// Policy chooses peers for announce replies. nil means
	// DefaultPolicy{Groups: Groups, SubnetBits: 24}.
	Policy Policy
	// Published info-hashes are on the allow-list from the start. This is
	// how Start (which has no *Tracker to call Publish on) learns them.
	Published []Published
}

// Group is a named set of prefixes, for example one classroom.
type Group struct {
	Name     string
	Prefixes []netip.Prefix
}

// Published names one info-hash for Config.Published.
type Published struct {
	InfoHash [20]byte
	Name     string
}

// withDefaults validates c and fills in defaults. Errors wrap ErrBadConfig
// and say what to fix.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, args...)...)
	}
	switch {
	case c.Interval == 0:
		c.Interval = DefaultInterval
	case c.Interval < time.Second:
		return bad("Interval %v is below 1s: announce intervals are whole seconds (BEP 3); set it to 1s or more, e.g. 10s", c.Interval)
	}
	switch {
	case c.PeerTTL == 0:
		c.PeerTTL = 3 * c.Interval
	case c.PeerTTL < c.Interval:
		return bad("PeerTTL %v is shorter than Interval %v: peers would expire between announces; set PeerTTL to at least Interval (default 3×Interval)", c.PeerTTL, c.Interval)
	}
	switch {
	case c.MaxPeers == 0:
		c.MaxPeers = DefaultMaxPeers
	case c.MaxPeers < 0:
		return bad("MaxPeers %d is negative: set it to the most peers per announce reply, e.g. %d", c.MaxPeers, DefaultMaxPeers)
	}
	switch {
	case c.MaxSwarmPeers == 0:
		c.MaxSwarmPeers = DefaultMaxSwarmPeers
	case c.MaxSwarmPeers < 0:
		return bad("MaxSwarmPeers %d is negative: set it to the most peers per swarm, e.g. %d", c.MaxSwarmPeers, DefaultMaxSwarmPeers)
	}
	switch {
	case c.MaxPeersPerHost == 0:
		c.MaxPeersPerHost = DefaultMaxPeersPerHost
	case c.MaxPeersPerHost < 0:
		return bad("MaxPeersPerHost %d is negative: set it to the most peers one address may have in a swarm, e.g. %d", c.MaxPeersPerHost, DefaultMaxPeersPerHost)
	}
	c.Trusted = slices.Clone(c.Trusted)
	for i, a := range c.Trusted {
		c.Trusted[i] = a.Unmap()
	}
	names := map[string]bool{}
	groups := make([]Group, 0, len(c.Groups))
	for i, g := range c.Groups {
		if g.Name == "" {
			return bad("group %d has no name: name every group (e.g. the classroom)", i)
		}
		if names[g.Name] {
			return bad("group %q is defined twice: merge its prefixes into one group", g.Name)
		}
		names[g.Name] = true
		if len(g.Prefixes) == 0 {
			return bad("group %q has no prefixes: add its subnets, e.g. 10.1.2.0/24", g.Name)
		}
		pfxs := make([]netip.Prefix, 0, len(g.Prefixes))
		for _, p := range g.Prefixes {
			if !p.IsValid() {
				return bad("group %q has an invalid prefix %v: write prefixes like 10.1.2.0/24", g.Name, p)
			}
			pfxs = append(pfxs, p.Masked())
		}
		groups = append(groups, Group{Name: g.Name, Prefixes: pfxs})
	}
	c.Groups = groups
	if c.Policy == nil {
		c.Policy = DefaultPolicy{Groups: c.Groups, SubnetBits: DefaultSubnetBits}
	}
	c.Published = slices.Clone(c.Published)
	return c, nil
}

// Tracker is an in-memory LAN BitTorrent tracker. Its methods are safe for
// concurrent use.
type Tracker struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time // injectable clock for tests
	handler  http.Handler
	interval int32 // cfg.Interval in whole seconds, rounded up

	mu     sync.Mutex
	swarms map[[20]byte]*swarm
}

type swarm struct {
	name      string
	peers     map[netip.AddrPort]*peerState
	perHost   map[netip.Addr]int // peers per address, for MaxPeersPerHost
	completed int64              // event=completed announces, at most one per peer stay
	// hosts keeps each host's transfer totals across its peer stays, so
	// what a machine gave the swarm still counts after it stopped or
	// expired. At most MaxSwarmPeers hosts are kept.
	hosts map[netip.Addr]*hostTotals
}

type counters struct{ uploaded, downloaded int64 }

type hostTotals struct {
	counters                     // all-time totals
	last     map[uint16]counters // per port: what its last announce said
}

// maxPortsPerHost bounds hostTotals.last.
const maxPortsPerHost = 64

type peerState struct {
	Peer
	countedCompleted bool
}

// New validates cfg, applies defaults and returns a Tracker with
// cfg.Published on its allow-list. log may be nil (discard).
func New(cfg Config, log *slog.Logger) (*Tracker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tracker{
		cfg:      cfg,
		log:      log,
		now:      time.Now,
		interval: int32(min((cfg.Interval+time.Second-1)/time.Second, math.MaxInt32)),
		swarms:   map[[20]byte]*swarm{},
	}
	for _, p := range cfg.Published {
		t.Publish(p.InfoHash, p.Name)
	}
	t.handler = t.newHandler()
	return t, nil
}

// Publish puts ih on the allow-list under a display name. Publishing an
// already published hash only renames it; its peers stay.
func (t *Tracker) Publish(ih [20]byte, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if sw, ok := t.swarms[ih]; ok {
		sw.name = name
		return
	}
	t.swarms[ih] = &swarm{name: name, peers: map[netip.AddrPort]*peerState{}, perHost: map[netip.Addr]int{}, hosts: map[netip.Addr]*hostTotals{}}
	t.log.Info("tracker: published", "info_hash", hex.EncodeToString(ih[:]), "name", name)
}

// Unpublish removes ih from the allow-list and forgets its swarm.
func (t *Tracker) Unpublish(ih [20]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.swarms[ih]; !ok {
		return
	}
	delete(t.swarms, ih)
	t.log.Info("tracker: unpublished", "info_hash", hex.EncodeToString(ih[:]))
}

// Handler serves /announce, /scrape and /stats.
func (t *Tracker) Handler() http.Handler { return t.handler }

// SwarmStats describes one published swarm. Byte counts are sums over the
// current peers, as they last announced them.
type SwarmStats struct {
	InfoHash   string      `json:"info_hash"` // hex
	Name       string      `json:"name"`
	Peers      int         `json:"peers"`
	Seeders    int         `json:"seeders"`
	Leechers   int         `json:"leechers"`
	Completed  int64       `json:"completed"` // event=completed announces seen
	Uploaded   int64       `json:"uploaded"`
	Downloaded int64       `json:"downloaded"`
	Left       int64       `json:"left"` // over peers that reported it
	PeerList   []PeerStats `json:"peer_list"`
	// Hosts are per-host totals since the tracker started, over all the
	// host's peer stays: they keep counting after a peer stops or
	// expires, so after the imaging they still say how much each machine
	// gave the swarm (per host, not per pair).
	Hosts []HostStats `json:"hosts"`
}

// HostStats is one host's all-time transfer totals in a swarm, as its
// peers announced them (BEP 3 uploaded and downloaded).
type HostStats struct {
	Addr       netip.Addr `json:"addr"`
	Uploaded   int64      `json:"uploaded"`
	Downloaded int64      `json:"downloaded"`
}

// PeerStats is one peer in SwarmStats.
type PeerStats struct {
	Addr       netip.AddrPort `json:"addr"`
	Complete   bool           `json:"complete"`
	Left       int64          `json:"left"` // -1 if unknown
	Uploaded   int64          `json:"uploaded"`
	Downloaded int64          `json:"downloaded"`
	LastSeen   time.Time      `json:"last_seen"`
}

// Stats returns statistics for every published swarm, sorted by name (then
// info-hash).
func (t *Tracker) Stats() []SwarmStats {
	now := t.now()
	t.mu.Lock()
	ret := make([]SwarmStats, 0, len(t.swarms))
	for ih, sw := range t.swarms {
		ret = append(ret, t.swarmStatsLocked(ih, sw, now))
	}
	t.mu.Unlock()
	slices.SortFunc(ret, func(a, b SwarmStats) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.InfoHash, b.InfoHash))
	})
	return ret
}

// Swarm returns the statistics of one swarm, and false if ih is not
// published.
func (t *Tracker) Swarm(ih [20]byte) (SwarmStats, bool) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	sw, ok := t.swarms[ih]
	if !ok {
		return SwarmStats{}, false
	}
	return t.swarmStatsLocked(ih, sw, now), true
}

func (t *Tracker) swarmStatsLocked(ih [20]byte, sw *swarm, now time.Time) SwarmStats {
	t.expireLocked(sw, now)
	s := SwarmStats{
		InfoHash:  hex.EncodeToString(ih[:]),
		Name:      sw.name,
		Peers:     len(sw.peers),
		Completed: sw.completed,
		PeerList:  make([]PeerStats, 0, len(sw.peers)),
	}
	for _, p := range sw.peers {
		if p.Complete() {
			s.Seeders++
		} else {
			s.Leechers++
		}
		s.Uploaded = addSat(s.Uploaded, p.Uploaded)
		s.Downloaded = addSat(s.Downloaded, p.Downloaded)
		if p.Left > 0 {
			s.Left = addSat(s.Left, p.Left)
		}
		s.PeerList = append(s.PeerList, PeerStats{
			Addr:       p.Addr,
			Complete:   p.Complete(),
			Left:       p.Left,
			Uploaded:   p.Uploaded,
			Downloaded: p.Downloaded,
			LastSeen:   p.LastSeen,
		})
	}
	slices.SortFunc(s.PeerList, func(a, b PeerStats) int { return a.Addr.Compare(b.Addr) })
	s.Hosts = make([]HostStats, 0, len(sw.hosts))
	for a, h := range sw.hosts {
		s.Hosts = append(s.Hosts, HostStats{Addr: a, Uploaded: h.uploaded, Downloaded: h.downloaded})
	}
	slices.SortFunc(s.Hosts, func(a, b HostStats) int { return a.Addr.Compare(b.Addr) })
	return s
}

// addSat adds two non-negative counters, saturating instead of wrapping:
// the values come from clients.
func addSat(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// expireLocked drops peers that have not announced within PeerTTL.
func (t *Tracker) expireLocked(sw *swarm, now time.Time) {
	for addr, p := range sw.peers {
		if now.Sub(p.LastSeen) > t.cfg.PeerTTL {
			sw.remove(addr)
		}
	}
}

// remove drops one peer.
func (sw *swarm) remove(addr netip.AddrPort) {
	if _, ok := sw.peers[addr]; !ok {
		return
	}
	delete(sw.peers, addr)
	a := addr.Addr().Unmap()
	if sw.perHost[a]--; sw.perHost[a] <= 0 {
		delete(sw.perHost, a)
	}
}

// add puts a new peer in the swarm.
func (sw *swarm) add(addr netip.AddrPort) *peerState {
	p := &peerState{Peer: Peer{Addr: addr}}
	sw.peers[addr] = p
	sw.perHost[addr.Addr().Unmap()]++
	return p
}

// trusted reports whether a is an image host's address or loopback (a
// process on the tracker's own machine).
func (t *Tracker) trusted(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || slices.Contains(t.cfg.Trusted, a)
}

// admit reports the error track would return for a's allow-list and swarm
// cap checks, without changing anything.
func (t *Tracker) admit(a Announce, addr netip.AddrPort) error {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.admitLocked(a, addr, now)
}

func (t *Tracker) admitLocked(a Announce, addr netip.AddrPort, now time.Time) error {
	sw, ok := t.swarms[a.InfoHash]
	if !ok {
		return t.notPublished(a.InfoHash)
	}
	t.expireLocked(sw, now)
	if _, known := sw.peers[addr]; known || a.Event == EventStopped {
		return nil
	}
	if n := sw.perHost[addr.Addr().Unmap()]; n >= t.cfg.MaxPeersPerHost && !t.trusted(addr.Addr()) {
		return fmt.Errorf("%w: %s already has %d peers in swarm %x (%s): a machine runs one client; stop the others, or wait %s for stale ones to expire",
			ErrHostFull, addr.Addr(), n, a.InfoHash, sw.name, t.cfg.PeerTTL)
	}
	if len(sw.peers) >= t.cfg.MaxSwarmPeers {
		return fmt.Errorf("%w: swarm %x (%s) already has %d peers: retry later, or raise the tracker's MaxSwarmPeers",
			ErrSwarmFull, a.InfoHash, sw.name, len(sw.peers))
	}
	return nil
}

func (t *Tracker) notPublished(ih [20]byte) error {
	return fmt.Errorf("%w: info_hash %x is not published on this tracker: publish the torrent with `pxeswarm seed --tracker-listen` or `pxeswarm tracker --publish X.torrent`",
		ErrNotPublished, ih)
}

// track records one announce. It is the whole state change an announce
// makes, under one lock, so that the allow-list and the swarm cap are
// checked atomically.
func (t *Tracker) track(a Announce, addr netip.AddrPort) error {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.admitLocked(a, addr, now); err != nil {
		return err
	}
	sw := t.swarms[a.InfoHash]
	sw.countHost(addr, a, t.cfg.MaxSwarmPeers)
	p, ok := sw.peers[addr]
	if a.Event == EventStopped {
		sw.remove(addr)
		return nil
	}
	if !ok {
		p = sw.add(addr)
	}
	p.ID = a.PeerID
	p.Left = a.Left
	p.Uploaded = a.Uploaded
	p.Downloaded = a.Downloaded
	p.LastSeen = now
	if a.Event == EventCompleted && !p.countedCompleted {
		p.countedCompleted = true
		sw.completed++
	}
	return nil
}

// countHost adds what announce a reports beyond the previous announce
// from the same address and port to the host's totals. The previous
// counters are kept with the host, not the peer, so a peer that expired
// and announces again is not counted twice. Counters that went down
// belong to a new client session on the same port: all of it is new.
func (sw *swarm) countHost(addr netip.AddrPort, a Announce, maxHosts int) {
	h, ok := sw.hosts[addr.Addr()]
	if !ok {
		if len(sw.hosts) >= maxHosts {
			return
		}
		h = &hostTotals{last: map[uint16]counters{}}
		sw.hosts[addr.Addr()] = h
	}
	delta := func(now, before int64) int64 {
		if now >= before {
			return now - before
		}
		return now
	}
	prev, seen := h.last[addr.Port()]
	if !seen && len(h.last) >= maxPortsPerHost {
		clear(h.last) // a host with this many ports is odd; forget, do not grow
	}
	h.uploaded = addSat(h.uploaded, delta(a.Uploaded, prev.uploaded))
	h.downloaded = addSat(h.downloaded, delta(a.Downloaded, prev.downloaded))
	h.last[addr.Port()] = counters{a.Uploaded, a.Downloaded}
}

// peersFor returns a copy of the swarm's peers and its seeder and leecher
// counts.
func (t *Tracker) peersFor(ih [20]byte) (peers []Peer, seeders, leechers int, err error) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	sw, ok := t.swarms[ih]
	if !ok {
		return nil, 0, 0, t.notPublished(ih)
	}
	t.expireLocked(sw, now)
	peers = make([]Peer, 0, len(sw.peers))
	for _, p := range sw.peers {
		peers = append(peers, p.Peer)
		if p.Complete() {
			seeders++
		} else {
			leechers++
		}
	}
	return peers, seeders, leechers, nil
}

// choose runs the policy and enforces what the tracker promises whatever
// the policy does: never the asker, at most max peers.
func (t *Tracker) choose(asker netip.AddrPort, peers []Peer, max int) []Peer {
	if max <= 0 || len(peers) == 0 {
		return nil
	}
	// The image hosts' seeders first, whatever the policy and the rest of
	// the swarm say: made-up complete peers must not crowd them out.
	var out, rest []Peer
	for _, p := range peers {
		switch {
		case sameAddrPort(p.Addr, asker):
		case len(t.cfg.Trusted) > 0 && slices.Contains(t.cfg.Trusted, p.Addr.Addr().Unmap()) && len(out) < max:
			out = append(out, p)
		default:
			rest = append(rest, p)
		}
	}
	if len(out) == max {
		return out
	}
	chosen := t.cfg.Policy.Choose(asker, rest, max-len(out))
	for _, p := range chosen {
		if len(out) == max {
			break
		}
		if !sameAddrPort(p.Addr, asker) {
			out = append(out, p)
		}
	}
	return out
}

type scrapeCounts struct {
	name                          string
	seeders, leechers, downloaded int
}

// scrape returns counts for the published hashes among ihs (all published
// hashes if ihs is empty); unknown hashes are omitted.
func (t *Tracker) scrape(ihs [][20]byte) map[[20]byte]scrapeCounts {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(ihs) == 0 {
		for ih := range t.swarms {
			ihs = append(ihs, ih)
		}
	}
	ret := make(map[[20]byte]scrapeCounts, len(ihs))
	for _, ih := range ihs {
		sw, ok := t.swarms[ih]
		if !ok {
			continue
		}
		t.expireLocked(sw, now)
		c := scrapeCounts{name: sw.name, downloaded: int(min(sw.completed, math.MaxInt32))}
		for _, p := range sw.peers {
			if p.Complete() {
				c.seeders++
			} else {
				c.leechers++
			}
		}
		ret[ih] = c
	}
	return ret
}

// Start runs a tracker for c: New, listen on c.Listen, serve until ctx is
// done. It returns nil when ctx is cancelled.
func (c Config) Start(ctx context.Context, log *slog.Logger) error {
	if c.Listen == "" {
		return fmt.Errorf("%w: Listen is empty: set the tracker's listen address, e.g. \":6969\"", ErrBadConfig)
	}
	t, err := New(c, log)
	if err != nil {
		return err
	}
	ln, err := listen(ctx, c.Listen)
	if err != nil {
		return fmt.Errorf("tracker: listening on %s: %w: pick a free port or stop whatever holds it", c.Listen, err)
	}
	return t.Serve(ctx, ln)
}
