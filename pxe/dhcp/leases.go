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
	"path/filepath"
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
// suggests reserving it). Clients request within a few seconds (PXE ROMs
// collect offers for up to about 4 s); a made-up client that never
// requests holds its address no longer than this.
const offerHold = 15 * time.Second

// declineHold is how long an address a client declined (RFC 2131
// §4.3.3: someone else answers ARP for it) is not handed out.
const declineHold = 10 * time.Minute

type pendingOffer struct {
	ip       netip.Addr
	until    time.Time
	priority bool // made to a machine Config.Priority named
}

// addrBook is full mode's address book. Every map is bounded by the
// pool size: each entry holds a distinct address from the network.
// Callers hold Handler.mu.
//
// On disk it is two files: the lease file, a snapshot replaced atomically
// (internal/atomicfile), and beside it a journal (<lease file>.journal)
// to which each change appends one line, fsynced before the reply goes
// out (RFC 2131 §3.1 step 4 commits the binding before the ACK). A
// change costs one short append, not a rewrite of every lease; the
// journal is folded into a new snapshot (and emptied) at start, at a
// clean stop, and when it holds more lines than compactAfter allows.
type addrBook struct {
	path     string
	log      *slog.Logger
	journal  *os.File   // open for appending; nil until the first change
	lines    int        // journal lines since the last snapshot
	reserve  int        // addresses kept for priority machines (Config.PoolReserve)
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
		log:      log,
		reserve:  c.PoolReserve,
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
	leases, torn, err := readLeases(l.path)
	if err != nil {
		return nil, err
	}
	if torn {
		log.Warn("dhcp: the lease journal's last line was cut short (a crash while writing); it is dropped", "file", l.journalPath())
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
	// Fold the journal into a fresh snapshot, so it starts empty.
	if err := l.compact(); err != nil {
		return nil, fmt.Errorf("%w %s: writing it: %v: check the folder's permissions and free space", ErrLeaseFile, l.path, err)
	}
	log.Info("dhcp: leases loaded", "file", l.path, "leases", len(l.byMAC), "dropped_outside_network", dropped)
	return l, nil
}

// readLeases reads the lease file at path and replays its journal on it:
// every lease as it stands. A missing or empty file is no leases. torn
// says the journal's last line was cut short (a crash while appending),
// which is dropped; anything else unreadable is ErrLeaseFile.
func readLeases(path string) (leases []lease, torn bool, err error) {
	corrupt := func(file string, err error) error {
		return fmt.Errorf("%w %s is corrupt (%v): move it aside (mv %s %s.bad) and start again; machines keep their addresses until they renew, then may get new ones", ErrLeaseFile, file, err, file, file)
	}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("%w %s: %v: check its permissions, or set LeaseFile elsewhere", ErrLeaseFile, path, err)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		if leases, err = parseLeases(b); err != nil {
			return nil, false, corrupt(path, err)
		}
	}
	jpath := path + journalSuffix
	jb, err := os.ReadFile(jpath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("%w %s: %v: check its permissions", ErrLeaseFile, jpath, err)
	}
	entries, torn, err := parseJournal(jb)
	if err != nil {
		return nil, false, corrupt(jpath, err)
	}
	if len(entries) == 0 {
		return leases, torn, nil
	}
	byMAC := map[string]lease{}
	byIP := map[netip.Addr]string{}
	set := func(e journalEntry) {
		if old, ok := byMAC[e.MAC]; ok {
			delete(byIP, old.IP)
			delete(byMAC, e.MAC)
		}
		if e.Drop {
			return
		}
		if other, ok := byIP[e.IP]; ok {
			delete(byMAC, other)
		}
		byMAC[e.MAC] = lease{MAC: e.MAC, IP: e.IP, Expires: e.Expires}
		byIP[e.IP] = e.MAC
	}
	for _, le := range leases {
		set(journalEntry{MAC: le.MAC, IP: le.IP, Expires: le.Expires})
	}
	for _, e := range entries {
		set(e)
	}
	leases = leases[:0]
	for _, le := range byMAC {
		leases = append(leases, le)
	}
	slices.SortFunc(leases, func(a, b lease) int { return a.IP.Compare(b.IP) })
	return leases, torn, nil
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

// journalSuffix names the journal beside the lease file.
const journalSuffix = ".journal"

// journalEntry is one journal line: mac's lease as it now is, or, with
// Drop, that mac has none.
type journalEntry struct {
	MAC     string     `json:"mac"`
	IP      netip.Addr `json:"ip"`
	Expires time.Time  `json:"expires,omitzero"`
	Drop    bool       `json:"drop,omitempty"`
}

// parseJournal decodes journal lines. A last line without its newline
// that does not parse is a torn append: dropped, and torn is true. Any
// other bad line is an error.
func parseJournal(b []byte) (entries []journalEntry, torn bool, err error) {
	for n := 1; len(b) > 0; n++ {
		line, rest, complete := bytes.Cut(b, []byte("\n"))
		b = rest
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e journalEntry
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		err := dec.Decode(&e)
		if err == nil && dec.More() {
			err = errors.New("data after the entry")
		}
		if err == nil {
			err = e.check()
		}
		if err != nil {
			if !complete {
				return entries, true, nil
			}
			return nil, false, fmt.Errorf("journal line %d: %v", n, err)
		}
		entries = append(entries, e)
	}
	return entries, false, nil
}

func (e journalEntry) check() error {
	if mac, err := protocol.ParseMAC(e.MAC); err != nil || mac != e.MAC {
		return fmt.Errorf("MAC %q", e.MAC)
	}
	if !e.IP.Is4() {
		return fmt.Errorf("address %v is not IPv4", e.IP)
	}
	return nil
}

func (l *addrBook) journalPath() string { return l.path + journalSuffix }

// compactAfter is how many journal lines may gather before they are
// folded into a new snapshot: twice the leases (so the rewrites cost O(1)
// per change on average), at least 256.
func compactAfter(leases int) int { return max(256, 2*leases) }

// record appends one change to the journal and fsyncs it; past
// compactAfter lines it writes a new snapshot instead.
func (l *addrBook) record(e journalEntry) error {
	if l.path == "" {
		return nil
	}
	if l.lines+1 > compactAfter(len(l.byMAC)) {
		return l.compact()
	}
	if l.journal == nil {
		f, err := os.OpenFile(l.journalPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		l.journal = f
		// The new file's name must survive a crash too.
		if err := syncDir(filepath.Dir(l.path)); err != nil {
			return err
		}
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := l.journal.Write(append(b, '\n')); err != nil {
		return err
	}
	l.lines++
	return l.journal.Sync()
}

// compact writes every lease to a new snapshot, atomically (a temporary
// file, fsync, rename, fsync the folder), then empties the journal. A
// crash between the two leaves the journal to be replayed on the new
// snapshot, which gives the same leases: each line sets its MAC's lease
// outright.
func (l *addrBook) compact() error {
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
	if err := atomicfile.Write(l.path, append(b, '\n'), 0o600); err != nil {
		return err
	}
	l.lines = 0
	if l.journal != nil {
		if err := l.journal.Truncate(0); err != nil {
			return err
		}
		return l.journal.Sync()
	}
	if err := os.Truncate(l.journalPath(), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// close writes a final snapshot and closes the journal.
func (l *addrBook) close() error {
	err := l.compact()
	if l.journal != nil {
		if cerr := l.journal.Close(); err == nil {
			err = cerr
		}
		l.journal = nil
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
// A new address (none of the first three) goes to a machine that is not
// prio only while more than the reserve are free; a prio machine that
// finds none free takes the oldest offer still waiting for a REQUEST
// from a machine that is not prio.
func (l *addrBook) pick(mac string, requested netip.Addr, now time.Time, prio bool) netip.Addr {
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
	if !l.mayTakeNew(prio, now) {
		return netip.Addr{}
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
	if prio {
		var take netip.Addr
		var until time.Time
		for _, o := range l.offers {
			if !o.priority && o.until.After(now) && l.inPool(o.ip) && (!take.IsValid() || o.until.Before(until)) {
				take, until = o.ip, o.until
			}
		}
		return take
	}
	return netip.Addr{}
}

// free counts the pool addresses a new client could get now.
func (l *addrBook) free(now time.Time) int {
	n := 0
	for v := u32(l.start); v <= u32(l.end) && v != 0; v++ {
		if l.usable(fromU32(v), "", now) {
			n++
		}
	}
	return n
}

// mayTakeNew says whether a client may get an address it does not hold:
// always if prio, else only while more than the reserve are free.
func (l *addrBook) mayTakeNew(prio bool, now time.Time) bool {
	return prio || l.reserve == 0 || l.free(now) > l.reserve
}

// offer sets ip aside for mac while it decides.
func (l *addrBook) offer(mac string, ip netip.Addr, now time.Time, prio bool) {
	l.dropOffer(mac)
	if other, ok := l.offered[ip]; ok {
		delete(l.offers, other)
	}
	l.offers[mac] = pendingOffer{ip: ip, until: now.Add(offerHold), priority: prio}
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
// a record of the client (after a lost lease file, say), within the
// reserve's limit (see pick).
func (l *addrBook) canGrant(mac string, ip netip.Addr, now time.Time, prio bool) bool {
	if r, ok := l.resByMAC[mac]; ok && r != ip {
		return false
	}
	if !l.usable(ip, mac, now) {
		return false
	}
	if _, reserved := l.resByMAC[mac]; reserved {
		return true
	}
	if le := l.byMAC[mac]; le != nil && le.IP == ip {
		return true // renewing, or its last address
	}
	if o, ok := l.offers[mac]; ok && o.ip == ip {
		return true // the address it was offered
	}
	return l.mayTakeNew(prio, now)
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
	return l.record(journalEntry{MAC: mac, IP: ip, Expires: le.Expires})
}

// release ends mac's lease on ip now, keeping the memory of it.
func (l *addrBook) release(mac string, ip netip.Addr, now time.Time) (bool, error) {
	le := l.byMAC[mac]
	if le == nil || le.IP != ip || !le.Expires.After(now) {
		return false, nil
	}
	le.Expires = now.UTC().Truncate(time.Second)
	return true, l.record(journalEntry{MAC: mac, IP: ip, Expires: le.Expires})
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
		return true, l.record(journalEntry{MAC: mac, IP: ip, Drop: true})
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
