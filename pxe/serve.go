package pxe

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/pxe/dhcp"
	"github.com/pxeswarm/pxeswarm/tracker"
)

// Ready is logged once every service of Start listens; tests and admins
// wait for it.
const Ready = "pxeswarm serve: ready"

// Start runs the whole boot server the site describes: DHCP, TFTP, HTTP
// (with the tracker on the same port), the image catalog and a trusted
// seeder per image. It blocks until ctx is done or a service fails, and
// returns nil on cancellation.
func (s *Site) Start(ctx context.Context, log *slog.Logger) error {
	s.ApplyDefaults()
	if err := s.Check(); err != nil {
		return err
	}
	if err := s.prepareHost(); err != nil {
		return err
	}
	key, err := LoadOrCreateKey(s.StateDir)
	if err != nil {
		return err
	}
	token, err := s.adminToken()
	if err != nil {
		return err
	}
	store, err := s.openStore()
	if err != nil {
		return err
	}
	defer store.Close()
	cat, err := s.openCatalog(ctx, log, store)
	if err != nil {
		return err
	}
	tr, err := s.newTracker(cat, log)
	if err != nil {
		return err
	}
	auto := s.newBackend(store, cat, log)
	// HTTP answers from the store alone: its GETs change nothing, and
	// only what DHCP sees starts automatic tasks (auto, in startDHCP).
	web := s.httpConfig(key, token, store, cat, tr, store)
	if s.usePackagedBoot(PackagedBootDir) {
		// The package's initramfs carries no plan key: send ours after it.
		if web.InitramfsAppend, err = KeyArchive(key.Public().(ed25519.PublicKey)); err != nil {
			return err
		}
		web.Kernel, web.Initramfs = filepath.Join(PackagedBootDir, "vmlinuz"), filepath.Join(PackagedBootDir, "initramfs")
		log.Info("serve: boot files from the package, with this server's plan key appended to the initramfs",
			"kernel", web.Kernel, "initramfs", web.Initramfs, "rebuild_to", filepath.Join(s.StateDir, "boot"))
	}
	ports := &seedPorts{addr: s.Address, port: map[string]int{}}
	web.Seeders = ports.addrs
	if s.HTTP.CaptureDir != "off" {
		// Published captures join the catalog here, before the seeders
		// follow it.
		if web.Captures, err = OpenCaptures(CaptureConfig{Dir: s.HTTP.CaptureDir, Catalog: cat, Trackers: web.Trackers, Ctx: ctx},
			log.With("service", "capture")); err != nil {
			return err
		}
		defer web.Captures.Wait()
	}
	hlog := log.With("service", "http")
	fingerprint := ""
	if s.HTTP.HTTPSListen != "" {
		cert, fp, err := s.tlsConfig().Load(hlog)
		if err != nil {
			return err
		}
		web.HTTPSListen, web.HTTPSURL, web.TLSCert, fingerprint = s.HTTP.HTTPSListen, s.httpsURL(), &cert, fp
	}
	hsrv, err := web.newServer(hlog) // checks the config before anything listens
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http: listen on %s: is another web server using the port? set http.listen: %w", s.HTTP.Listen, err)
	}
	var tln net.Listener
	if web.HTTPSListen != "" {
		if tln, err = net.Listen("tcp", web.HTTPSListen); err != nil {
			ln.Close()
			return fmt.Errorf("https: listen on %s: is another web server using the port? set http.https_listen: %w", web.HTTPSListen, err)
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	waker, sched, err := s.startWake(ctx, log, store, cat)
	if err != nil {
		ln.Close()
		if tln != nil {
			tln.Close()
		}
		return err
	}
	if waker != nil {
		defer waker.Wait()
	}
	hsrv.cfg.Wake, hsrv.cfg.Scheduler = waker, sched
	g.Go(func() error { return sched.Start(ctx, log.With("service", "schedule")) })
	g.Go(func() error { return web.serve(ctx, hlog, ln, hsrv, nil) })
	if tln != nil {
		g.Go(func() error { return web.serve(ctx, hlog, tln, hsrv, web.TLSCert) })
	}
	s.startDHCP(ctx, g, log, store, auto)
	if s.TFTP.Listen != "off" {
		tf := TFTPConfig{Listen: s.TFTP.Listen, Root: s.TFTP.Root}
		if s.DHCP.UEFILoader == LoaderShim {
			tf.Files, tf.Generate = hsrv.TFTPFiles()
		}
		g.Go(func() error { return tf.Start(ctx, log.With("service", "tftp")) })
	}
	seeds := SeedConfig{Catalog: cat, Port: s.Seed.Port, UploadLimit: int64(s.Seed.UploadLimit), Trackers: web.Trackers, OnPort: ports.set}
	g.Go(func() error { return seeds.Start(ctx, log.With("service", "seed")) })
	log.Info(Ready, "url", s.PublicURL, "dhcp", s.DHCP.Mode, "interface", s.Interface,
		"images", strings.Join(cat.Names(), ","), "auto", s.Plan.Auto,
		"plan_key", filepath.Join(s.StateDir, "plan-key.pub"), "admin_token_file", s.tokenFile(),
		"admin_url", cmp.Or(web.HTTPSURL, s.PublicURL), "https_fingerprint", fingerprint, "console", s.consoleURL(web))
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// consoleURL is where admins open the web console ("" when it is off).
func (s *Site) consoleURL(web HTTPConfig) string {
	if s.HTTP.Console == "off" {
		return ""
	}
	return cmp.Or(web.HTTPSURL, s.PublicURL) + "/room"
}

// startDHCP runs DHCP (unless dhcp.mode is off) in g, and records in the
// store the machines it sees.
func (s *Site) startDHCP(ctx context.Context, g *errgroup.Group, log *slog.Logger, store *Store, auto *autoBackend) {
	if s.DHCP.Mode == "off" {
		return
	}
	seen := make(chan Machine, 256)
	dcfg := s.dhcpConfig(log, store, auto, seen)
	g.Go(func() error {
		for {
			select {
			case m := <-seen:
				if err := store.SeeMachine(m.MAC, m.IP, m.Arch); err != nil {
					log.Debug("store: record machine", "mac", m.MAC, "err", err)
				}
			case <-ctx.Done():
				return nil
			}
		}
	})
	g.Go(func() error { return dcfg.Start(ctx, log.With("service", "dhcp")) })
}

// dhcpConfig is the DHCP service of the site. What it sees is how
// machines enter the store: every PXE client and agent is admitted
// (Store.AdmitMachine, up to max_machines) before its reply is built, so
// plan.auto can give it a task at once. Later sightings (address,
// firmware) go to seen, to be recorded off the reply path.
func (s *Site) dhcpConfig(log *slog.Logger, store *Store, auto *autoBackend, seen chan<- Machine) dhcp.Config {
	var lastFull time.Time // when a full store was last logged as a warning
	return dhcp.Config{
		Mode: dhcp.Mode(s.DHCP.Mode), Interface: s.Interface, ServerIP: s.Address,
		PoolStart: s.DHCP.PoolStart, PoolEnd: s.DHCP.PoolEnd, PrefixLen: s.DHCP.PrefixLen, PoolReserve: s.DHCP.PoolReserve,
		Router: s.DHCP.Router, DNS: s.DHCP.DNS, LeaseTime: s.DHCP.LeaseTime.Duration,
		LeaseFile:    filepath.Join(s.StateDir, "dhcp-leases.json"),
		BootFileBIOS: s.DHCP.BootFileBIOS, BootFileUEFI: s.DHCP.BootFileUEFI, HTTPBootURL: s.httpBootURL(),
		URLOption: uint8(s.DHCP.Option), ServerURL: s.PublicURL + "/",
		// Called under the DHCP handler's lock, so lastFull needs no
		// other. A known machine costs a read; a new one a commit.
		Seen: func(mac net.HardwareAddr, arch uint16, agent bool) {
			added, err := store.AdmitMachine(mac.String(), dhcp.ArchName(arch))
			switch {
			case errors.Is(err, ErrTooManyMachines) && time.Since(lastFull) > time.Minute:
				lastFull = time.Now()
				log.Warn("store: machine not added (logged once a minute)", "mac", mac, "err", err)
			case err != nil && !errors.Is(err, ErrTooManyMachines):
				log.Error("store: adding machine", "mac", mac, "err", err)
			case added:
				log.Info("store: new machine seen by DHCP", "mac", mac, "arch", dhcp.ArchName(arch))
			}
			// plan.auto covers a terminal whose agent asks our DHCP
			// without a PXE boot first (booted from a stick, or straight
			// into the kernel): Boot, which starts PXE clients' tasks,
			// is not asked for an agent. (Only for an agent: a PXE
			// client's Boot right after this does the same lookup.)
			if err == nil && agent {
				if _, _, err := auto.ActiveTask(mac.String()); err != nil {
					log.Error("store: automatic task", "mac", mac, "err", err)
				}
			}
		},
		// A machine with a task, or one the config lists, may take the
		// pool's last addresses (dhcp.pool_reserve); made-up MACs may not.
		Priority: func(mac net.HardwareAddr) bool {
			if auto.known[mac.String()] {
				return true
			}
			_, ok, _ := store.ActiveTask(mac.String())
			return ok
		},
		// Only machines with a task load iPXE; the others boot their
		// disk straight from the firmware. On a store error, let iPXE
		// ask: its script falls back to the local disk too. plan.auto
		// starts tasks here.
		Boot: func(mac net.HardwareAddr) bool {
			_, ok, err := auto.ActiveTask(mac.String())
			return ok || err != nil
		},
		// Recording the machine is a store commit (an fsync): done
		// off the reply path, so a room's PXE replies do not queue
		// behind the disk. When the queue is full the record waits
		// for the machine's next request.
		OnBoot: func(mac net.HardwareAddr, arch uint16, ip netip.Addr) {
			addr := ""
			if ip.IsValid() && !ip.IsUnspecified() {
				addr = ip.String()
			}
			select {
			case seen <- Machine{MAC: mac.String(), IP: addr, Arch: dhcp.ArchName(arch)}:
			default:
				log.Debug("store: machine record queue full; skipped", "mac", mac)
			}
		},
	}
}

// prepareHost makes the state dir, finds this server's address, the
// DHCP prefix length and the public URL, and checks the site again with
// them.
func (s *Site) prepareHost() error {
	if err := os.MkdirAll(s.StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir %s: %w (set state_dir to a writable folder)", s.StateDir, err)
	}
	if err := s.resolveAddress(); err != nil {
		return err
	}
	return s.Check()
}

// openStore opens the task store and records the [[machine]]s in it.
func (s *Site) openStore() (*Store, error) {
	store, err := OpenStore(filepath.Join(s.StateDir, "tasks.db"))
	if err != nil {
		return nil, err
	}
	store.MaxMachines = s.MaxMachines
	for _, m := range s.Machines {
		if err := store.PutMachine(Machine{MAC: m.MAC, Name: m.Name, Group: m.Group}); err != nil {
			store.Close()
			return nil, err
		}
	}
	return store, nil
}

// openCatalog publishes every [[image]] in a new catalog: its torrent, or
// one made from its raw source (cached in <state_dir>/images while the
// source keeps its size and modification time). The catalog refuses to
// remove an image that an active task in store uses.
func (s *Site) openCatalog(ctx context.Context, log *slog.Logger, store *Store) (*catalog.Catalog, error) {
	cat := catalog.New(catalog.Config{Dir: filepath.Join(s.StateDir, "images"), WebSeed: s.Seed.WebSeed, InUse: store.ImageUsers},
		log.With("service", "catalog"))
	for i, si := range s.Images {
		_, err := cat.Add(ctx, catalog.Spec{Name: si.Name, Torrent: si.Torrent, Source: si.Source, PieceLength: int64(si.PieceLength)})
		if errors.Is(err, catalog.ErrBadImage) || errors.Is(err, catalog.ErrExists) {
			return nil, fmt.Errorf("%w: image[%d]: %w", ErrBadConfig, i, err)
		}
		if err != nil {
			return nil, fmt.Errorf("image[%d]: %w", i, err)
		}
	}
	return cat, nil
}

// newTracker makes the tracker (served on the HTTP port) and has its
// allow-list follow the catalog: an image's info-hash is published while
// the image is.
func (s *Site) newTracker(cat *catalog.Catalog, log *slog.Logger) (*tracker.Tracker, error) {
	// This host's seeders come first in every reply, and are not capped
	// like other addresses.
	cfg := tracker.Config{Interval: s.Tracker.Interval.Duration, Trusted: []netip.Addr{s.Address}}
	for _, g := range s.Tracker.Groups {
		cfg.Groups = append(cfg.Groups, tracker.Group{Name: g.Name, Prefixes: g.Prefixes})
	}
	tr, err := tracker.New(cfg, log.With("service", "tracker"))
	if err != nil {
		return nil, err
	}
	_, err = cat.Follow(catalog.Follower{
		Added:   func(im *catalog.Image) error { tr.Publish(im.Image.InfoHash, im.Name); return nil },
		Removed: func(im *catalog.Image) { tr.Unpublish(im.Image.InfoHash) },
	})
	return tr, err
}

// planDefaults are the [plan] settings of every task.
func (s *Site) planDefaults() PlanDefaults {
	p := s.Plan
	return PlanDefaults{Target: p.PlanTarget(), CreateTable: p.CreateTable, Discard: p.Discard, CheckMode: p.Check, SeedFor: p.SeedFor.Duration.String(), After: p.After,
		OnError: p.OnError}
}

// newBackend answers "which task does this MAC get?" from the store and
// the [plan] auto policy.
func (s *Site) newBackend(store *Store, cat *catalog.Catalog, log *slog.Logger) *autoBackend {
	image := s.Plan.Image
	if image == "" && len(s.Images) == 1 {
		image = cat.List()[0].Name
	}
	b := &autoBackend{Store: store, catalog: cat, mode: s.Plan.Auto, image: image, settings: s.planDefaults(), log: log,
		known: map[string]bool{}, tasked: map[string]bool{}}
	for _, m := range s.Machines {
		b.known[m.MAC] = true
	}
	return b
}

// seedPorts is each image's seeder port as the seed service reports it,
// for the plans (Plan.Seeders): the seeders listen on every address, and
// terminals reach them at the server's address.
type seedPorts struct {
	addr netip.Addr
	mu   sync.Mutex
	port map[string]int
}

func (p *seedPorts) set(image string, port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if port == 0 {
		delete(p.port, image)
	} else {
		p.port[image] = port
	}
}

func (p *seedPorts) addrs(image string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	port, ok := p.port[image]
	if !ok || !p.addr.IsValid() {
		return nil
	}
	return []string{netip.AddrPortFrom(p.addr, uint16(port)).String()}
}

// PackagedBootDir is where the Debian package (make deb) installs the
// terminals' vmlinuz and initramfs, built when the package was made and
// without a plan key: serve appends its own (KeyArchive).
const PackagedBootDir = "/usr/lib/pxeswarm/boot"

// usePackagedBoot says whether serve sends the package's boot files from
// dir instead of <state_dir>/boot: only when http.kernel and
// http.initramfs are left at their defaults, <state_dir>/boot has no
// vmlinuz (no `pxeswarm build initramfs` ran there) and dir has both files.
// A pair built on this host always wins, and a configured path is never
// replaced.
func (s *Site) usePackagedBoot(dir string) bool {
	own := filepath.Join(s.StateDir, "boot")
	if s.HTTP.Kernel != filepath.Join(own, "vmlinuz") || s.HTTP.Initramfs != filepath.Join(own, "initramfs") {
		return false
	}
	if _, err := os.Stat(s.HTTP.Kernel); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	for _, f := range []string{"vmlinuz", "initramfs"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// httpConfig serves scripts, plans, the catalog's torrents, the APIs and
// the tracker on one port.
func (s *Site) httpConfig(key ed25519.PrivateKey, token string, store *Store, cat *catalog.Catalog, tr *tracker.Tracker, backend Backend) HTTPConfig {
	var shim, grub, ipxe string
	if s.DHCP.UEFILoader == LoaderShim {
		shim, grub = s.TFTP.Shim, s.TFTP.Grub
	} else {
		ipxe = filepath.Join(s.TFTP.Root, s.DHCP.BootFileUEFI)
	}
	return HTTPConfig{
		Shim: shim, Grub: grub, IPXE: ipxe,
		Listen: s.HTTP.Listen, PublicURL: s.PublicURL, Store: store, Backend: backend, Key: key,
		Kernel: s.HTTP.Kernel, Initramfs: s.HTTP.Initramfs, Cmdline: s.HTTP.Cmdline,
		Catalog: cat, ImageDirs: s.HTTP.ImageDirs, Trackers: []string{s.PublicURL + "/announce"}, Defaults: s.planDefaults(),
		AdminToken: token, Tracker: tr.Handler(), Swarms: func() any { return tr.Stats() },
		Console: HTTPConsole{Off: s.HTTP.Console == "off", PasswordHash: s.HTTP.ConsolePasswordHash,
			OpenRoom: s.HTTP.ConsoleOpenRoom, SessionTTL: s.HTTP.ConsoleSession.Duration},
	}
}

// httpBootURL is the loader's URL for UEFI HTTP boot clients.
func (s *Site) httpBootURL() string {
	if s.DHCP.UEFILoader == LoaderShim {
		return s.PublicURL + "/boot/" + ShimName
	}
	return s.PublicURL + "/boot/" + IPXEName
}

// resolveAddress fills Address from the interface, dhcp.prefix_len (full
// mode) from that address's prefix on the interface, and PublicURL from
// the address.
func (s *Site) resolveAddress() error {
	needPrefix := s.DHCP.Mode == "full" && s.DHCP.PrefixLen == 0
	if (!s.Address.IsValid() || needPrefix) && s.Interface != "" {
		ifi, err := net.InterfaceByName(s.Interface)
		if err != nil {
			return fmt.Errorf("%w: interface %q: %w (list them with ip link)", ErrBadConfig, s.Interface, err)
		}
		addrs, _ := ifi.Addrs()
		var have []string
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || !p.Addr().Is4() {
				continue
			}
			have = append(have, p.String())
			if !s.Address.IsValid() {
				s.Address = p.Addr()
			}
			if p.Addr() == s.Address {
				if needPrefix {
					if p.Bits() < 8 || p.Bits() > 30 {
						return fmt.Errorf("%w: %s on %s is a /%d, no subnet to hand out addresses in: set dhcp.prefix_len (8–30)", ErrBadConfig, p, s.Interface, p.Bits())
					}
					s.DHCP.PrefixLen = p.Bits()
				}
				break
			}
		}
		if !s.Address.IsValid() {
			return fmt.Errorf("%w: interface %s has no IPv4 address: give it one (ip addr add) or set address", ErrBadConfig, s.Interface)
		}
		if needPrefix && s.DHCP.PrefixLen == 0 {
			return fmt.Errorf("%w: address %v is not on interface %s (it has %s): fix address, or set dhcp.prefix_len", ErrBadConfig, s.Address, s.Interface, strings.Join(have, ", "))
		}
	}
	if s.PublicURL == "" {
		if !s.Address.IsValid() {
			return fmt.Errorf("%w: cannot tell terminals how to reach us: set address or public_url", ErrBadConfig)
		}
		_, port, err := net.SplitHostPort(s.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("%w: http.listen %q: %w", ErrBadConfig, s.HTTP.Listen, err)
		}
		s.PublicURL = "http://" + net.JoinHostPort(s.Address.String(), port)
	}
	return nil
}

// httpsURL is how admins reach the HTTPS listener: the public URL's host
// with http.https_listen's port.
func (s *Site) httpsURL() string {
	host := s.Address.String()
	if u, err := url.Parse(s.PublicURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	_, port, _ := net.SplitHostPort(s.HTTP.HTTPSListen) // checked by Check
	return "https://" + net.JoinHostPort(host, port)
}

// tlsConfig is where the HTTPS certificate comes from: the site's own, or
// one made in the state dir for this server's address and names.
func (s *Site) tlsConfig() TLSConfig {
	hosts := []string{"localhost", "127.0.0.1"}
	if s.Address.IsValid() {
		hosts = append(hosts, s.Address.String())
	}
	if u, err := url.Parse(s.PublicURL); err == nil && u.Hostname() != "" && !slices.Contains(hosts, u.Hostname()) {
		hosts = append(hosts, u.Hostname())
	}
	if h, err := os.Hostname(); err == nil && h != "" && !slices.Contains(hosts, h) {
		hosts = append(hosts, h)
	}
	return TLSConfig{CertFile: s.HTTP.TLSCert, KeyFile: s.HTTP.TLSKey, StateDir: s.StateDir, Hosts: hosts}
}

func (s *Site) tokenFile() string {
	if s.HTTP.AdminTokenFile != "" {
		return s.HTTP.AdminTokenFile
	}
	if s.HTTP.AdminToken != "" {
		return ""
	}
	return filepath.Join(s.StateDir, "admin-token")
}

// adminToken returns the configured token, or reads (making it on first
// start) the token file.
func (s *Site) adminToken() (string, error) {
	if s.HTTP.AdminToken != "" {
		return s.HTTP.AdminToken, nil
	}
	path := s.tokenFile()
	b, err := os.ReadFile(path)
	if err == nil {
		t := strings.TrimSpace(string(b))
		if len(t) < 16 {
			return "", fmt.Errorf("%w: admin token in %s is shorter than 16 characters: put a longer one there", ErrBadConfig, path)
		}
		return t, nil
	}
	if !errors.Is(err, os.ErrNotExist) || s.HTTP.AdminTokenFile != "" {
		return "", fmt.Errorf("%w: admin token file: %w", ErrBadConfig, err)
	}
	raw := make([]byte, 24)
	rand.Read(raw)
	t := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin token %s: %w", path, err)
	}
	return t, nil
}

// autoBackend is the Store, plus the [plan] auto policy: a machine that
// PXE-boots with no active task gets one for the default image if the
// policy covers it, the store knows it (its DHCP saw it, or the config
// lists it) and it never had a task for that image. Only the DHCP
// service asks it (Config.Boot and Seen); HTTP asks the Store, so no GET
// starts a task.
type autoBackend struct {
	*Store
	catalog  *catalog.Catalog
	mode     string // none, known, all
	image    string
	settings TaskSettings    // the [plan] defaults, stored with the task
	known    map[string]bool // MACs from [[machine]]; read-only once serving
	log      *slog.Logger

	mu     sync.Mutex
	tasked map[string]bool // MACs known to have had a task for image (tasks are never deleted)
}

func (b *autoBackend) ActiveTask(mac string) (Task, bool, error) {
	t, ok, err := b.Store.ActiveTask(mac)
	if err != nil || ok || b.mode == "none" || b.image == "" {
		return t, ok, err
	}
	if b.mode == "known" && !b.known[mac] {
		return t, false, nil
	}
	if _, err := b.Store.Machine(mac); errors.Is(err, ErrNoMachine) {
		return t, false, nil // not admitted (the store is full): no task
	} else if err != nil {
		return t, false, err
	}
	if _, ok := b.catalog.Get(b.image); !ok {
		return t, false, nil // removed at run time: no new tasks for it
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tasked[mac] {
		// Only a machine not yet seen with a task for the image pays for
		// a scan (this runs on the DHCP reply path); the scan also learns
		// tasks the admin API made.
		all, err := b.Store.Tasks()
		if err != nil {
			return Task{}, false, err
		}
		for _, old := range all {
			if old.Image == b.image {
				b.tasked[old.MAC] = true
			}
		}
	}
	if b.tasked[mac] {
		return Task{}, false, nil // once per image
	}
	t, err = b.Store.AddTask(Task{MAC: mac, Image: b.image, TaskSettings: b.settings})
	if err != nil {
		return Task{}, false, err
	}
	b.tasked[mac] = true
	b.log.Info("task started automatically (plan.auto)", "mac", mac, "image", b.image, "task", t.ID, "auto", b.mode)
	return t, true, nil
}
