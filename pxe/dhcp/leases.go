package dhcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/atomicfile"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// lease is one machine's address. Expired leases are kept as a
// memory of who had which address, so a machine gets the same one back;
// their addresses go to others only when the pool has no unused address
// left.
type lease struct {
	MAC     string     `json:"mac"` // lower case, colons
	IP      netip.Addr `json:"ip"`
	Expires time.Time  `json:"expires"`
}

// leaseFile is the lease file's format (JSON).
type leaseFile struct {
	Version int     `json:"version"` // leaseVersion
	Leases  []lease `json:"leases"`
}

const leaseVersion = 1

// offerHold is how long an offered address stays set aside for the
// client while it collects offers and requests one (RFC 2131 §4.3.1
// suggests reserving it).
const offerHold = time.Minute

// declineHold is how long an address a client declined (RFC 2131
// §4.3.3: someone else answers ARP for it) is not handed out.
const declineHold = 10 * time.Minute

type pendingOffer struct {
	ip    netip.Addr
	until time.Time
}

// addrBook is full mode's address book. Every map is bounded by the
// pool size: each entry holds a distinct address from the network.
// Callers hold Handler.mu.
type addrBook struct {
	path     string
	start    netip.Addr // pool, inclusive
	end      netip.Addr
	subnet   netip.Prefix
	excluded map[netip.Addr]bool // server, router, network, broadcast

	resByMAC map[string]netip.Addr // reservations
	resByIP  map[netip.Addr]string

	byMAC    map[string]*lease
	byIP     map[netip.Addr]*lease
	offers   map[string]pendingOffer
	offered  map[netip.Addr]string // offers by address
	declined map[netip.Addr]time.Time
}

// loadAddrBook builds the address book for c and reads its lease file.
func loadAddrBook(c Config, subnet netip.Prefix, log *slog.Logger) (*addrBook, error) {
	l := &addrBook{
		path:     c.LeaseFile,
		start:    c.PoolStart,
		end:      c.PoolEnd,
		subnet:   subnet,
		excluded: map[netip.Addr]bool{c.ServerIP: true, subnet.Addr(): true, broadcast(subnet): true},
		resByMAC: map[string]netip.Addr{},
		resByIP:  map[netip.Addr]string{},
		byMAC:    map[string]*lease{},
		byIP:     map[netip.Addr]*lease{},
		offers:   map[string]pendingOffer{},
		offered:  map[netip.Addr]string{},
		declined: map[netip.Addr]time.Time{},
	}
	if c.Router.IsValid() {
		l.excluded[c.Router] = true
	}
	for mac, ip := range c.Reservations {
		l.resByMAC[mac] = ip
		l.resByIP[ip] = mac
	}
	if l.path == "" {
		log.Warn("dhcp: no lease file: leases are forgotten on restart (set LeaseFile)")
		return l, nil
	}
	b, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		log.Info("dhcp: no lease file yet; starting empty", "file", l.path)
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v: check its permissions, or set LeaseFile elsewhere", ErrLeaseFile, l.path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		log.Warn("dhcp: lease file is empty; starting empty", "file", l.path)
		return l, nil
	}
	leases, err := parseLeases(b)
	if err != nil {
		return nil, fmt.Errorf("%w %s is corrupt (%v): move it aside (mv %s %s.bad) and start again; machines keep their addresses until they renew, then may get new ones", ErrLeaseFile, l.path, err, l.path, l.path)
	}
	dropped := 0
	for _, le := range leases {
		if !subnet.Contains(le.IP) || l.excluded[le.IP] {
			dropped++ // the network changed since; forget it
			continue
		}
		le := le
		l.byMAC[le.MAC] = &le
		l.byIP[le.IP] = &le
	}
	log.Info("dhcp: leases loaded", "file", l.path, "leases", len(l.byMAC), "dropped_outside_network", dropped)
	return l, nil
}

// parseLeases decodes and checks a lease file.
func parseLeases(b []byte) ([]lease, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f leaseFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the lease list")
	}
	if f.Version != leaseVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, leaseVersion)
	}
	macs := map[string]bool{}
	ips := map[netip.Addr]bool{}
	for i, le := range f.Leases {
		if mac, err := protocol.ParseMAC(le.MAC); err != nil || mac != le.MAC {
			return nil, fmt.Errorf("lease %d: MAC %q", i, le.MAC)
		}
		if !le.IP.Is4() {
			return nil, fmt.Errorf("lease %d: address %v is not IPv4", i, le.IP)
		}
		if macs[le.MAC] || ips[le.IP] {
			return nil, fmt.Errorf("lease %d: %s or %v appears twice", i, le.MAC, le.IP)
		}
		macs[le.MAC], ips[le.IP] = true, true
	}
	return f.Leases, nil
}

// save writes the leases atomically: a temporary file in the same
// folder, fsync, rename over the old file, fsync the folder. A crash
// leaves either the old or the new file, never a torn one.
func (l *addrBook) save() error {
	if l.path == "" {
		return nil
	}
	f := leaseFile{Version: leaseVersion, Leases: make([]lease, 0, len(l.byMAC))}
	for _, le := range l.byMAC {
		f.Leases = append(f.Leases, *le)
	}
	slices.SortFunc(f.Leases, func(a, b lease) int { return a.IP.Compare(b.IP) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(l.path, append(b, '\n'), 0o600)
}

func (l *addrBook) inPool(ip netip.Addr) bool {
	return !ip.Less(l.start) && !l.end.Less(ip)
}

// usable says whether ip may go to mac now.
func (l *addrBook) usable(ip netip.Addr, mac string, now time.Time) bool {
	if !ip.Is4() || l.excluded[ip] || !l.subnet.Contains(ip) {
		return false
	}
	if owner, ok := l.resByIP[ip]; ok {
		if owner != mac {
			return false
		}
	} else if !l.inPool(ip) {
		return false
	}
	if le := l.byIP[ip]; le != nil && le.MAC != mac && le.Expires.After(now) {
		return false
	}
	if owner, ok := l.offered[ip]; ok && owner != mac && l.offers[owner].until.After(now) {
		return false
	}
	if until, ok := l.declined[ip]; ok && until.After(now) {
		return false
	}
	return true
}

// pick chooses the address to offer mac: its reservation, else its
// current or last address, else a pending offer, else the one it asks
// for if nobody else had it, else the first never-used address, else the
// address whose lease expired longest ago. Invalid if the pool is full.
func (l *addrBook) pick(mac string, requested netip.Addr, now time.Time) netip.Addr {
	if ip, ok := l.resByMAC[mac]; ok {
		if l.usable(ip, mac, now) {
			return ip
		}
		return netip.Addr{} // a reservation is the only address it gets
	}
	if le := l.byMAC[mac]; le != nil && l.usable(le.IP, mac, now) {
		return le.IP
	}
	if o, ok := l.offers[mac]; ok && l.usable(o.ip, mac, now) {
		return o.ip
	}
	if requested.IsValid() && l.usable(requested, mac, now) {
		if le := l.byIP[requested]; le == nil || le.MAC == mac {
			return requested
		}
	}
	var oldest *lease
	for v := u32(l.start); v <= u32(l.end) && v != 0; v++ {
		ip := fromU32(v)
		if !l.usable(ip, mac, now) {
			continue
		}
		le := l.byIP[ip]
		if le == nil {
			return ip
		}
		if oldest == nil || le.Expires.Before(oldest.Expires) {
			oldest = le
		}
	}
	if oldest != nil {
		return oldest.IP
	}
	return netip.Addr{}
}

// offer sets ip aside for mac while it decides.
func (l *addrBook) offer(mac string, ip netip.Addr, now time.Time) {
	l.dropOffer(mac)
	if other, ok := l.offered[ip]; ok {
		delete(l.offers, other)
	}
	l.offers[mac] = pendingOffer{ip: ip, until: now.Add(offerHold)}
	l.offered[ip] = mac
}

func (l *addrBook) dropOffer(mac string) {
	if o, ok := l.offers[mac]; ok {
		delete(l.offered, o.ip)
		delete(l.offers, mac)
	}
}

// canGrant says whether a REQUEST from mac for ip gets an ACK. We are
// the network's only server, so a free address is granted even without
// a record of the client (after a lost lease file, say).
func (l *addrBook) canGrant(mac string, ip netip.Addr, now time.Time) bool {
	if r, ok := l.resByMAC[mac]; ok && r != ip {
		return false
	}
	return l.usable(ip, mac, now)
}

// bind records mac's lease on ip until until and saves the file.
func (l *addrBook) bind(mac string, ip netip.Addr, until time.Time) error {
	l.dropOffer(mac)
	if old := l.byMAC[mac]; old != nil && old.IP != ip {
		delete(l.byIP, old.IP)
	}
	if other := l.byIP[ip]; other != nil && other.MAC != mac {
		delete(l.byMAC, other.MAC) // its lease had expired (usable checked)
	}
	if o, ok := l.offered[ip]; ok && o != mac {
		delete(l.offers, o)
		delete(l.offered, ip)
	}
	le := &lease{MAC: mac, IP: ip, Expires: until.UTC().Truncate(time.Second)}
	l.byMAC[mac] = le
	l.byIP[ip] = le
	return l.save()
}

// release ends mac's lease on ip now, keeping the memory of it.
func (l *addrBook) release(mac string, ip netip.Addr, now time.Time) (bool, error) {
	le := l.byMAC[mac]
	if le == nil || le.IP != ip || !le.Expires.After(now) {
		return false, nil
	}
	le.Expires = now.UTC().Truncate(time.Second)
	return true, l.save()
}

// decline takes ip out of use for a while and forgets mac's claim on it.
func (l *addrBook) decline(mac string, ip netip.Addr, now time.Time) (bool, error) {
	if !ip.IsValid() || !l.subnet.Contains(ip) {
		return false, nil
	}
	le := l.byMAC[mac]
	o, offered := l.offers[mac]
	if (le == nil || le.IP != ip) && (!offered || o.ip != ip) {
		return false, nil // not an address we gave this client
	}
	l.dropOffer(mac)
	l.declined[ip] = now.Add(declineHold)
	if le != nil && le.IP == ip {
		delete(l.byMAC, mac)
		delete(l.byIP, ip)
		return true, l.save()
	}
	return true, nil
}

// lease returns mac's lease, for tests.
func (l *addrBook) lease(mac string) (lease, bool) {
	le := l.byMAC[mac]
	if le == nil {
		return lease{}, false
	}
	return *le, true
}
