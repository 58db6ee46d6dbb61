package pxe

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/pxe/dhcp"
)

// ErrBadConfig is wrapped by every site-config error.
var ErrBadConfig = errors.New("bad site config")

// Site is the whole boot server's configuration: one TOML file (see
// docs/site.example.toml, which documents every key) or the flags of
// `pxeswarm serve`'s quick mode. LoadSite reads it, ApplyDefaults fills in
// what was left out, Check checks it; Start runs it.
type Site struct {
	// StateDir keeps the plan-signing key, the task store, the DHCP leases
	// and torrents made from raw images. Default /var/lib/pxeswarm.
	StateDir string `toml:"state_dir"`
	// Interface is the network interface facing the terminals (DHCP binds
	// to it). Required unless dhcp.mode is "off".
	Interface string `toml:"interface"`
	// Address is this server's IPv4 address on Interface. Default: the
	// interface's first IPv4 address.
	Address netip.Addr `toml:"address"`
	// PublicURL is how terminals reach the HTTP server. Default
	// http://<address>:<http port>.
	PublicURL string `toml:"public_url"`
	// MaxMachines caps the machine records in the store; default 4096.
	// Machines enter it when the DHCP service sees them PXE-boot (or the
	// config lists them, or an admin gives them a task), never from an
	// HTTP request; past the cap the least recently seen ones that are
	// not listed and have no active task are pruned.
	MaxMachines int `toml:"max_machines"`

	HTTP    SiteHTTP    `toml:"http"`
	DHCP    SiteDHCP    `toml:"dhcp"`
	TFTP    SiteTFTP    `toml:"tftp"`
	Tracker SiteTracker `toml:"tracker"`
	Seed    SiteSeed    `toml:"seed"`
	Plan    SitePlan    `toml:"plan"`
	Images  []SiteImage `toml:"image"`
	// Machines are the known terminals, with names and groups (a room).
	Machines []SiteMachine `toml:"machine"`

	// Wake and Schedule: Wake-on-LAN and timed tasks (site_wake.go).
	Wake     SiteWake     `toml:"wake"`
	Schedule SiteSchedule `toml:"schedule"`
}

// SiteHTTP is the [http] section.
type SiteHTTP struct {
	// Listen is the TCP address; default ":8080". The tracker's /announce
	// is served on the same port.
	Listen string `toml:"listen"`
	// HTTPSListen, if set (e.g. ":8443"), serves the same routes over
	// HTTPS too, and the admin API only there: an admin request over plain
	// HTTP is refused (403). The terminals keep plain HTTP (plans are
	// signed). Default "": no HTTPS.
	HTTPSListen string `toml:"https_listen"`
	// TLSCert and TLSKey are the site's own certificate and key (PEM).
	// Default: a self-signed certificate made on first start and kept in
	// <state_dir>/https-cert.pem and https-key.pem; serve logs its SHA-256
	// fingerprint for clients to pin.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// Kernel and Initramfs are what a terminal with a pending task boots.
	// Defaults: <state_dir>/boot/vmlinuz and <state_dir>/boot/initramfs.
	Kernel    string `toml:"kernel"`
	Initramfs string `toml:"initramfs"`
	// Cmdline is added to the kernel command line; default
	// "console=tty0 console=ttyS0,115200".
	Cmdline string `toml:"cmdline"`
	// AdminToken guards the admin API (start, cancel, finish tasks).
	// AdminTokenFile reads it from a file instead. With neither, a random
	// token is made on first start and kept in <state_dir>/admin-token.
	AdminToken     string `toml:"admin_token"`
	AdminTokenFile string `toml:"admin_token_file"`
	// ImageDirs are the folders whose files the admin API may publish as
	// images (POST /api/images), symbolic links resolved. Default none:
	// that route is off, so a leaked admin token cannot publish any file
	// of the image host to the network.
	ImageDirs []string `toml:"image_dirs"`
	// CaptureDir holds image captures (`pxeswarm capture`, POST
	// /api/captures): partitions being received, as sparse files, and the
	// captured images the server publishes and seeds. Its file system
	// must hold the captured images' used bytes: a capture it has no room
	// for is refused before any data is sent. Default
	// <state_dir>/captures; "off" turns captures off.
	CaptureDir string `toml:"capture_dir"`
	// Console is "on" (default) to serve the web console on this port
	// (HTTPS only when https_listen is set), or "off".
	Console string `toml:"console"`
	// ConsolePasswordHash, if set, is a bcrypt hash of a password that
	// logs into the console besides the admin token (make one with
	// `htpasswd -nbBC 12 "" 'password' | tr -d ':\n'`).
	ConsolePasswordHash string `toml:"console_password_hash"`
	// ConsoleOpenRoom shows the room page read-only to anyone on the
	// network, without login; default false (every page needs login).
	ConsoleOpenRoom bool `toml:"console_open_room"`
	// ConsoleSession is how long a console login lasts; default "8h".
	ConsoleSession duration `toml:"console_session"`
}

// SiteDHCP is the [dhcp] section.
type SiteDHCP struct {
	// Mode: "full" (we are the only DHCP server: leases from the pool),
	// "proxy" (PXE proxyDHCP beside the school's DHCP server; hands out no
	// address) or "off" (the existing server sends terminals to us by
	// itself, see the README). Default "proxy": it is the safe choice on a
	// network that may already have a DHCP server.
	Mode string `toml:"mode"`
	// Pool (full mode): first and last address handed out.
	PoolStart netip.Addr `toml:"pool_start"`
	PoolEnd   netip.Addr `toml:"pool_end"`
	// Prefix length of the subnet (full mode), sent as the subnet mask.
	// Default: the prefix of this server's address on the interface
	// (serve reads it when it starts).
	PrefixLen int `toml:"prefix_len"`
	// Router and DNS servers told to clients (full mode); optional.
	Router netip.Addr   `toml:"router"`
	DNS    []netip.Addr `toml:"dns"`
	// LeaseTime (full mode); default "1h".
	LeaseTime duration `toml:"lease_time"`
	// PoolReserve (full mode) is how many free pool addresses are kept
	// for machines with an active task or listed as [[machine]]: other
	// clients (whose MACs may be made up) get a new address only while
	// more are free. Default: a tenth of the pool, at least 1.
	PoolReserve int `toml:"pool_reserve"`
	// Option is the DHCP option code that carries the server URL; default
	// 224 (site-specific range 224–254).
	Option int `toml:"option"`
	// UEFILoader is what x86-64 UEFI machines boot first: "shim"
	// (default: Debian's signed shim, GRUB and kernel, which boot with
	// Secure Boot on; see tftp.shim and tftp.grub) or "ipxe" (Debian's
	// unsigned iPXE: Secure Boot must be off). UEFI HTTP boot clients
	// get the same loader's URL.
	UEFILoader string `toml:"uefi_loader"`
	// BootFileBIOS and BootFileUEFI are the boot files for legacy BIOS
	// and x86-64 UEFI firmware. Defaults "undionly.kpxe" (iPXE in
	// tftp.root) and, by uefi_loader, "shimx64.efi" (served from
	// tftp.shim) or "ipxe.efi" in tftp.root ("snponly.efi" uses the
	// firmware's network driver).
	BootFileBIOS string `toml:"bios_boot_file"`
	BootFileUEFI string `toml:"uefi_boot_file"`
}

// SiteTFTP is the [tftp] section.
type SiteTFTP struct {
	// Listen is the UDP address; default ":69". "off" disables TFTP (when
	// another TFTP server already serves the iPXE binaries).
	Listen string `toml:"listen"`
	// Root holds the iPXE binaries; default /usr/lib/ipxe (Debian's ipxe
	// package).
	Root string `toml:"root"`
	// Shim and Grub are the signed loaders of uefi_loader "shim", served
	// as shimx64.efi and grubx64.efi over TFTP and HTTP. Defaults: Debian's
	// shim-signed and grub-efi-amd64-signed (/usr/lib/shim/shimx64.efi.signed,
	// /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed); both must
	// come from the same Debian release (SBAT).
	Shim string `toml:"shim"`
	Grub string `toml:"grub"`
}

// SiteTracker is the [tracker] section.
type SiteTracker struct {
	// Interval between announces told to terminals; default "10s".
	Interval duration `toml:"interval"`
	// Groups tell the tracker which terminals share a switch: peers get
	// their own group first (then their own /24), and a terminal whose
	// group or /24 holds 4 other peers is told of no other group's
	// fetching machines, only of the image host (tracker.DefaultPolicy),
	// so a room's trades stay behind its switch.
	Groups []SiteGroup `toml:"group"`
}

// SiteGroup is one [[tracker.group]].
type SiteGroup struct {
	Name     string         `toml:"name"`
	Prefixes []netip.Prefix `toml:"prefixes"`
}

// SiteSeed is the [seed] section: the server seeds every image.
type SiteSeed struct {
	// Port is the first peer port; default 6881. Each image seeds on the
	// lowest port from Port up that no other image's seeder holds: the
	// [[image]]s get Port, Port+1, … in order, an image added at run time
	// (POST /api/images) the next free one, and a removed image's port is
	// reused.
	Port int `toml:"port"`
	// UploadLimit caps the server's upload per image in bytes per second,
	// e.g. "100MiB"; default none.
	UploadLimit ByteSize `toml:"upload_limit"`
	// WebSeed also serves image data over HTTP (BEP 19) so terminals can
	// fetch from the server without a peer connection; default false.
	WebSeed bool `toml:"web_seed"`
}

// SitePlan is the [plan] section: defaults for every task's plan.
type SitePlan struct {
	// Image is the default image for new tasks; default: the only image.
	Image string `toml:"image"`
	// Target: where the image goes. One of disk ("first" or a name like
	// "sda"), label (GPT partition name) or guid. Partition goes with disk.
	// Default disk = "first".
	Disk      string `toml:"disk"`
	Partition int    `toml:"partition"`
	Label     string `toml:"label"`
	GUID      string `toml:"guid"`
	// CreateTable writes the image's partition table first; default false.
	CreateTable bool `toml:"create_table"`
	// Discard has terminals discard the free space of used-block images
	// (TRIM on an SSD) after writing, where the disk can; default false.
	// It travels in the signed plan; a task may set its own.
	Discard bool `toml:"discard"`
	// Check is "fresh" (the target is blank or about to be overwritten)
	// or "verify" (hash what is there and fetch only what differs);
	// default "verify".
	Check string `toml:"check"`
	// SeedFor keeps a finished terminal seeding for others; default "10m".
	SeedFor duration `toml:"seed_for"`
	// After is "reboot", "poweroff" or "shell"; default "reboot".
	After string `toml:"after"`
	// OnError is what a terminal does after an error (a pulled cable, a
	// failing disk): "halt" (show the error and wait, no shell), "retry"
	// (wait a bounded back-off and start over) or "shell" (a root shell
	// on the console, for debugging); default "halt". It travels in the
	// signed plan; a task may set its own.
	OnError string `toml:"on_error"`
	// Auto starts tasks without the admin API: "none" (default), "known"
	// (every [[machine]] that PXE-boots and has never had a task for the
	// image) or "all" (every terminal that PXE-boots, once per image).
	Auto string `toml:"auto"`
}

// SiteImage is one [[image]].
type SiteImage struct {
	// Name identifies the image in tasks and plans; default: from the
	// torrent.
	Name string `toml:"name"`
	// Torrent made with `pxeswarm mktorrent`. Or give only Source: a raw
	// disk or partition image; serve makes (and caches) its torrent.
	Torrent string `toml:"torrent"`
	// Source files, one per image part in order: the seeder reads them.
	Source []string `toml:"source"`
	// PieceLength for a torrent made from Source; default by the image's
	// size (imager.PieceLengthFor: about 2048 pieces, 256KiB to 8MiB).
	PieceLength ByteSize `toml:"piece_length"`
}

// SiteMachine is one [[machine]].
type SiteMachine struct {
	MAC   string `toml:"mac"`
	Name  string `toml:"name"`
	Group string `toml:"group"`
}

// duration is a time.Duration read from a Go duration string ("90s").
type duration struct {
	time.Duration
	// set: the config or a flag gave a value, so "0s" means zero rather
	// than "use the default".
	set bool
}

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration: write it like 90s, 10m or 1h", b)
	}
	d.Duration, d.set = v, true
	return nil
}

// ByteSize is a size read from "8MiB", "1GB" or a plain number of bytes.
type ByteSize int64

func (b *ByteSize) UnmarshalText(t []byte) error {
	n, err := bytesize.Parse(string(t))
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}

// LoadSite reads a TOML site config, resolves its relative paths against
// the file's folder, fills in defaults and checks it. Unknown keys are an
// error naming them; so are bad values.
func LoadSite(path string) (*Site, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	s, err := decodeSite(data)
	if err == nil {
		s.resolve(filepath.Dir(path))
		s.ApplyDefaults()
		err = s.Check()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseSite parses a TOML site config, fills in defaults and checks it.
func ParseSite(data []byte) (*Site, error) {
	s, err := decodeSite(data)
	if err != nil {
		return nil, err
	}
	s.ApplyDefaults()
	if err := s.Check(); err != nil {
		return nil, err
	}
	return s, nil
}

// decodeSite decodes TOML strictly: unknown keys are an error.
func decodeSite(data []byte) (*Site, error) {
	var s Site
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&s)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%w: line %d: %s", ErrBadConfig, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: unknown key(s) %s: check the spelling against docs/site.example.toml", ErrBadConfig, strings.Join(keys, ", "))
	}
	return &s, nil
}

func (s *Site) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && !strings.Contains(*p, "://") {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&s.StateDir)
	abs(&s.HTTP.Kernel)
	abs(&s.HTTP.Initramfs)
	abs(&s.HTTP.AdminTokenFile)
	abs(&s.HTTP.TLSCert)
	abs(&s.HTTP.TLSKey)
	if s.HTTP.CaptureDir != "off" {
		abs(&s.HTTP.CaptureDir)
	}
	abs(&s.TFTP.Root)
	abs(&s.TFTP.Shim)
	abs(&s.TFTP.Grub)
	for i := range s.HTTP.ImageDirs {
		abs(&s.HTTP.ImageDirs[i])
	}
	for i := range s.Images {
		abs(&s.Images[i].Torrent)
		for j := range s.Images[i].Source {
			abs(&s.Images[i].Source[j])
		}
	}
}

// ApplyDefaults fills in every key left out, and normalises what has one
// spelling (public_url without a trailing slash, MACs). Call it before
// Check; LoadSite, ParseSite and Start do.
func (s *Site) ApplyDefaults() {
	if s.StateDir == "" {
		s.StateDir = "/var/lib/pxeswarm"
	}
	s.MaxMachines = cmp.Or(s.MaxMachines, DefaultMaxMachines)
	if u := strings.TrimRight(s.PublicURL, "/"); u != "" {
		s.PublicURL = u
	}
	// [http]
	h := &s.HTTP
	h.Listen = cmp.Or(h.Listen, ":8080")
	h.Kernel = cmp.Or(h.Kernel, filepath.Join(s.StateDir, "boot", "vmlinuz"))
	h.Initramfs = cmp.Or(h.Initramfs, filepath.Join(s.StateDir, "boot", "initramfs"))
	h.Cmdline = cmp.Or(h.Cmdline, "console=tty0 console=ttyS0,115200")
	h.CaptureDir = cmp.Or(h.CaptureDir, filepath.Join(s.StateDir, "captures"))
	h.Console = cmp.Or(h.Console, "on")
	h.ConsoleSession.Duration = cmp.Or(h.ConsoleSession.Duration, 8*time.Hour)
	// [dhcp]
	d := &s.DHCP
	d.Mode = cmp.Or(d.Mode, "proxy")
	// PrefixLen stays 0 when left out: Start takes it from the interface
	// (resolveAddress), which ApplyDefaults does not look at.
	d.LeaseTime.Duration = cmp.Or(d.LeaseTime.Duration, dhcp.DefaultLeaseTime)
	d.Option = cmp.Or(d.Option, int(dhcp.DefaultURLOption))
	d.BootFileBIOS = cmp.Or(d.BootFileBIOS, dhcp.DefaultBootFileBIOS)
	d.UEFILoader = cmp.Or(d.UEFILoader, LoaderShim)
	if d.UEFILoader == LoaderShim {
		d.BootFileUEFI = cmp.Or(d.BootFileUEFI, ShimName)
	}
	d.BootFileUEFI = cmp.Or(d.BootFileUEFI, dhcp.DefaultBootFileUEFI)
	// [tftp]
	s.TFTP.Listen = cmp.Or(s.TFTP.Listen, ":69")
	s.TFTP.Root = cmp.Or(s.TFTP.Root, DefaultTFTPRoot)
	s.TFTP.Shim = cmp.Or(s.TFTP.Shim, DefaultShim)
	s.TFTP.Grub = cmp.Or(s.TFTP.Grub, DefaultGrub)
	// [tracker], [seed]
	s.Tracker.Interval.Duration = cmp.Or(s.Tracker.Interval.Duration, 10*time.Second)
	s.Seed.Port = cmp.Or(s.Seed.Port, 6881)
	// [[image]]
	for i := range s.Images {
		if im := &s.Images[i]; im.Name == "" && im.Torrent == "" && len(im.Source) > 0 {
			im.Name = catalog.NameFromSource(im.Source[0])
		}
	}
	// [plan]
	p := &s.Plan
	if p.Disk == "" && p.Label == "" && p.GUID == "" && p.Partition == 0 {
		p.Disk = "first"
	}
	p.Check = cmp.Or(p.Check, "verify")
	if !p.SeedFor.set {
		p.SeedFor.Duration = 10 * time.Minute // "0s" stays zero: no seeding
	}
	p.After = cmp.Or(p.After, "reboot")
	p.OnError = cmp.Or(p.OnError, protocol.OnErrorHalt)
	p.Auto = cmp.Or(p.Auto, "none")
	s.applyWakeDefaults()
	// [[machine]]
	for i := range s.Machines {
		if mac, err := protocol.ParseMAC(s.Machines[i].MAC); err == nil {
			s.Machines[i].MAC = mac
		}
	}
}

// Check validates the site without changing it; call ApplyDefaults first.
// Errors wrap ErrBadConfig and name the key to fix.
func (s *Site) Check() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadConfig, key, fmt.Sprintf(format, args...))
	}
	if s.Address.IsValid() && !s.Address.Is4() {
		return bad("address", "%v is not an IPv4 address", s.Address)
	}
	if s.PublicURL != "" {
		u, err := url.Parse(s.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("public_url", "%q: want http://host:port", s.PublicURL)
		}
	}
	if s.MaxMachines < 1 {
		return bad("max_machines", "%d: want at least 1 (default 4096)", s.MaxMachines)
	}
	// [http]
	if s.HTTP.AdminToken != "" && s.HTTP.AdminTokenFile != "" {
		return bad("http.admin_token", "set admin_token or admin_token_file, not both")
	}
	if s.HTTP.AdminToken != "" && len(s.HTTP.AdminToken) < 16 {
		return bad("http.admin_token", "too short (%d characters): use at least 16 random characters", len(s.HTTP.AdminToken))
	}
	if h := s.HTTP.HTTPSListen; h != "" {
		if _, port, err := net.SplitHostPort(h); err != nil || port == "" || port == "0" {
			return bad("http.https_listen", "%q: want host:port or :port, such as \":8443\"", h)
		}
		if h == s.HTTP.Listen {
			return bad("http.https_listen", "%q is http.listen too: give HTTPS its own port", h)
		}
	}
	if (s.HTTP.TLSCert == "") != (s.HTTP.TLSKey == "") {
		return bad("http.tls_cert", "set tls_cert and tls_key together, or neither for a self-signed certificate")
	}
	if s.HTTP.TLSCert != "" && s.HTTP.HTTPSListen == "" {
		return bad("http.tls_cert", "a certificate without http.https_listen is unused: set https_listen (e.g. \":8443\")")
	}
	if c := s.HTTP.CaptureDir; c != "off" && c != "" && !filepath.IsAbs(c) {
		return bad("http.capture_dir", "%q: give an absolute folder, or \"off\"", c)
	}
	if c := s.HTTP.Console; c != "on" && c != "off" {
		return bad("http.console", "%q: want on or off", c)
	}
	if s.HTTP.ConsoleSession.Duration < time.Minute || s.HTTP.ConsoleSession.Duration > 30*24*time.Hour {
		return bad("http.console_session", "%v: want 1m to 720h", s.HTTP.ConsoleSession.Duration)
	}
	if h := s.HTTP.ConsolePasswordHash; h != "" {
		if _, err := bcrypt.Cost([]byte(h)); err != nil {
			return bad("http.console_password_hash", "not a bcrypt hash (%v): make one with htpasswd -nbBC 12 \"\" 'password' | tr -d ':\\n'", err)
		}
	}
	for i, dir := range s.HTTP.ImageDirs {
		if !filepath.IsAbs(dir) {
			return bad(fmt.Sprintf("http.image_dirs[%d]", i), "%q: give an absolute folder", dir)
		}
	}
	// [dhcp]
	d := &s.DHCP
	switch d.Mode {
	case "full", "proxy", "off":
	default:
		return bad("dhcp.mode", "%q: want full, proxy or off", d.Mode)
	}
	if d.UEFILoader != LoaderShim && d.UEFILoader != LoaderIPXE {
		return bad("dhcp.uefi_loader", "%q: want shim (signed, Secure Boot on or off) or ipxe (Secure Boot off)", d.UEFILoader)
	}
	if d.Mode != "off" && s.Interface == "" {
		return bad("interface", "required for dhcp.mode %q: name the interface facing the terminals (e.g. br0)", d.Mode)
	}
	if d.PrefixLen != 0 && (d.PrefixLen < 8 || d.PrefixLen > 30) {
		return bad("dhcp.prefix_len", "%d: want 8–30", d.PrefixLen)
	}
	if d.Mode == "full" {
		if !d.PoolStart.Is4() || !d.PoolEnd.Is4() {
			return bad("dhcp.pool_start", "full mode needs pool_start and pool_end (IPv4)")
		}
		if d.PoolEnd.Less(d.PoolStart) {
			return bad("dhcp.pool_end", "%v is before pool_start %v", d.PoolEnd, d.PoolStart)
		}
		// Without prefix_len the subnet is known once Start has read the
		// interface; it checks again then.
		if d.PrefixLen != 0 {
			p := netip.PrefixFrom(d.PoolStart, d.PrefixLen).Masked()
			if !p.Contains(d.PoolEnd) {
				return bad("dhcp.pool_end", "%v is not in %v with pool_start: fix the pool or prefix_len", d.PoolEnd, p)
			}
			if s.Address.IsValid() && !p.Contains(s.Address) {
				return bad("address", "%v is not in the pool's subnet %v", s.Address, p)
			}
		}
		a, e := d.PoolStart.As4(), d.PoolEnd.As4()
		if n := binary.BigEndian.Uint32(e[:]) - binary.BigEndian.Uint32(a[:]) + 1; d.PoolReserve < 0 || uint32(d.PoolReserve) > n {
			return bad("dhcp.pool_reserve", "%d: want 0 (a tenth of the pool) up to the pool's %d addresses", d.PoolReserve, n)
		}
	}
	if d.LeaseTime.Duration < time.Minute {
		return bad("dhcp.lease_time", "%v: at least 1m", d.LeaseTime.Duration)
	}
	if d.Option < 224 || d.Option > 254 {
		return bad("dhcp.option", "%d: use a site-specific option, 224–254", d.Option)
	}
	// [tracker]
	for i, g := range s.Tracker.Groups {
		if g.Name == "" || len(g.Prefixes) == 0 {
			return bad(fmt.Sprintf("tracker.group[%d]", i), "needs a name and prefixes")
		}
	}
	// [seed]
	if s.Seed.Port < 1 || s.Seed.Port+len(s.Images) > 65535 {
		return bad("seed.port", "%d: out of range", s.Seed.Port)
	}
	// [[image]]
	if len(s.Images) == 0 && len(s.HTTP.ImageDirs) == 0 && s.HTTP.CaptureDir == "off" {
		return bad("image", "no [[image]], no http.image_dirs and captures off: add an image with a torrent and its source files, or leave http.capture_dir on to capture the first one")
	}
	names := map[string]bool{}
	for i, im := range s.Images {
		key := fmt.Sprintf("image[%d]", i)
		if len(im.Source) == 0 {
			return bad(key+".source", "the server seeds every image: list its source file(s)")
		}
		if im.Torrent == "" && len(im.Source) != 1 {
			return bad(key+".torrent", "a torrent is needed for a multi-part image (make one with pxeswarm mktorrent)")
		}
		if im.Name != "" {
			if !catalog.ValidName(im.Name) {
				return bad(key+".name", "%q: use only letters, digits, '.', '_' and '-'", im.Name)
			}
			if names[im.Name] {
				return bad(key+".name", "%q is used twice", im.Name)
			}
			names[im.Name] = true
		}
		if im.PieceLength != 0 {
			if err := imager.CheckPieceLength(int64(im.PieceLength)); err != nil {
				return bad(key+".piece_length", "%v", err)
			}
		}
	}
	// [plan]
	p := &s.Plan
	if p.Image != "" && !names[p.Image] {
		return bad("plan.image", "%q is not the name of an [[image]]", p.Image)
	}
	if p.PlanTarget().Check() != nil {
		return bad("plan.disk", "set exactly one of disk, label or guid (partition goes with disk)")
	}
	if p.Check != "fresh" && p.Check != "verify" {
		return bad("plan.check", "%q: want fresh or verify", p.Check)
	}
	if p.SeedFor.Duration < 0 {
		return bad("plan.seed_for", "negative")
	}
	if !slices.Contains([]string{"reboot", "poweroff", "shell"}, p.After) {
		return bad("plan.after", "%q: want reboot, poweroff or shell", p.After)
	}
	if !protocol.ValidOnError(p.OnError) {
		return bad("plan.on_error", "%q: want halt, retry or shell", p.OnError)
	}
	if !slices.Contains([]string{"none", "known", "all"}, p.Auto) {
		return bad("plan.auto", "%q: want none, known or all", p.Auto)
	}
	if p.Auto != "none" && d.Mode == "off" {
		return bad("plan.auto", "%q needs dhcp.mode full or proxy: automatic tasks start when this server's DHCP sees a machine PXE-boot, and with mode off it sees none; start tasks with POST /api/tasks instead", p.Auto)
	}
	if err := s.checkWake(); err != nil {
		return err
	}
	// [[machine]]
	macs := map[string]bool{}
	for i, m := range s.Machines {
		key := fmt.Sprintf("machine[%d].mac", i)
		mac, err := protocol.ParseMAC(m.MAC)
		if err != nil {
			return bad(key, "%q: %v", m.MAC, err)
		}
		if macs[mac] {
			return bad(key, "%s is listed twice", mac)
		}
		macs[mac] = true
	}
	return nil
}

// PlanTarget is the [plan] section's target as a plan Target.
func (p SitePlan) PlanTarget() protocol.Target {
	return protocol.Target{Disk: p.Disk, Partition: p.Partition, Label: p.Label, GUID: p.GUID}
}
