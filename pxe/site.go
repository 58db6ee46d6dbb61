package pxe

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/dhcp"
)

// ErrBadConfig is wrapped by every site-config error.
var ErrBadConfig = errors.New("bad site config")

// Site is the whole boot server's configuration: one TOML file (see
// docs/site.example.toml, which documents every key) or the flags of
// `pxeswarm serve`'s quick mode. LoadSite reads and checks it; Start runs
// it.
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

	HTTP    SiteHTTP    `toml:"http"`
	DHCP    SiteDHCP    `toml:"dhcp"`
	TFTP    SiteTFTP    `toml:"tftp"`
	Tracker SiteTracker `toml:"tracker"`
	Seed    SiteSeed    `toml:"seed"`
	Plan    SitePlan    `toml:"plan"`
	Images  []SiteImage `toml:"image"`
	// Machines are the known terminals, with names and groups (a room).
	Machines []SiteMachine `toml:"machine"`
}

// SiteHTTP is the [http] section.
type SiteHTTP struct {
	// Listen is the TCP address; default ":8080". The tracker's /announce
	// is served on the same port.
	Listen string `toml:"listen"`
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
	// Prefix length of the subnet (full mode); default 24.
	PrefixLen int `toml:"prefix_len"`
	// Router and DNS servers told to clients (full mode); optional.
	Router netip.Addr   `toml:"router"`
	DNS    []netip.Addr `toml:"dns"`
	// LeaseTime (full mode); default "1h".
	LeaseTime duration `toml:"lease_time"`
	// Option is the DHCP option code that carries the server URL; default
	// 224 (site-specific range 224–254).
	Option int `toml:"option"`
	// BootFileBIOS and BootFileUEFI are the iPXE binaries in tftp.root
	// for legacy BIOS and x86-64 UEFI firmware. Defaults "undionly.kpxe"
	// and "ipxe.efi" ("snponly.efi" uses the firmware's network driver).
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
}

// SiteTracker is the [tracker] section.
type SiteTracker struct {
	// Interval between announces told to terminals; default "10s".
	Interval duration `toml:"interval"`
	// Groups tell the tracker which terminals share a switch: peers get
	// their own group first.
	Groups []SiteGroup `toml:"group"`
}

// SiteGroup is one [[tracker.group]].
type SiteGroup struct {
	Name     string         `toml:"name"`
	Prefixes []netip.Prefix `toml:"prefixes"`
}

// SiteSeed is the [seed] section: the server seeds every image.
type SiteSeed struct {
	// Port is the first peer port; image k uses Port+k. Default 6881.
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
	// Check is "fresh" (the target is blank or about to be overwritten)
	// or "verify" (hash what is there and fetch only what differs);
	// default "verify".
	Check string `toml:"check"`
	// SeedFor keeps a finished terminal seeding for others; default "10m".
	SeedFor duration `toml:"seed_for"`
	// After is "reboot", "poweroff" or "shell"; default "reboot".
	After string `toml:"after"`
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
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration: write it like 90s, 10m or 1h", b)
	}
	d.Duration = v
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

// LoadSite reads a TOML site config. Unknown keys are an error naming
// them; so are bad values.
func LoadSite(path string) (*Site, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	s, err := ParseSite(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Relative paths in the file are relative to the file.
	s.resolve(filepath.Dir(path))
	return s, nil
}

// ParseSite parses and checks a TOML site config.
func ParseSite(data []byte) (*Site, error) {
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
	if err := s.Check(); err != nil {
		return nil, err
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
	abs(&s.TFTP.Root)
	for i := range s.Images {
		abs(&s.Images[i].Torrent)
		for j := range s.Images[i].Source {
			abs(&s.Images[i].Source[j])
		}
	}
}

// Check fills in defaults and validates. Errors wrap ErrBadConfig and name
// the key to fix.
func (s *Site) Check() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadConfig, key, fmt.Sprintf(format, args...))
	}
	if s.StateDir == "" {
		s.StateDir = "/var/lib/pxeswarm"
	}
	if s.Address.IsValid() && !s.Address.Is4() {
		return bad("address", "%v is not an IPv4 address", s.Address)
	}
	if s.PublicURL != "" {
		u, err := url.Parse(s.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("public_url", "%q: want http://host:port", s.PublicURL)
		}
		s.PublicURL = strings.TrimRight(s.PublicURL, "/")
	}
	// [http]
	if s.HTTP.Listen == "" {
		s.HTTP.Listen = ":8080"
	}
	if s.HTTP.Kernel == "" {
		s.HTTP.Kernel = filepath.Join(s.StateDir, "boot", "vmlinuz")
	}
	if s.HTTP.Initramfs == "" {
		s.HTTP.Initramfs = filepath.Join(s.StateDir, "boot", "initramfs")
	}
	if s.HTTP.Cmdline == "" {
		s.HTTP.Cmdline = "console=tty0 console=ttyS0,115200"
	}
	if s.HTTP.AdminToken != "" && s.HTTP.AdminTokenFile != "" {
		return bad("http.admin_token", "set admin_token or admin_token_file, not both")
	}
	if s.HTTP.AdminToken != "" && len(s.HTTP.AdminToken) < 16 {
		return bad("http.admin_token", "too short (%d characters): use at least 16 random characters", len(s.HTTP.AdminToken))
	}
	// [dhcp]
	d := &s.DHCP
	if d.Mode == "" {
		d.Mode = "proxy"
	}
	switch d.Mode {
	case "full", "proxy", "off":
	default:
		return bad("dhcp.mode", "%q: want full, proxy or off", d.Mode)
	}
	if d.Mode != "off" && s.Interface == "" {
		return bad("interface", "required for dhcp.mode %q: name the interface facing the terminals (e.g. br0)", d.Mode)
	}
	if d.PrefixLen == 0 {
		d.PrefixLen = 24
	}
	if d.PrefixLen < 8 || d.PrefixLen > 30 {
		return bad("dhcp.prefix_len", "%d: want 8–30", d.PrefixLen)
	}
	if d.Mode == "full" {
		if !d.PoolStart.Is4() || !d.PoolEnd.Is4() {
			return bad("dhcp.pool_start", "full mode needs pool_start and pool_end (IPv4)")
		}
		if d.PoolEnd.Less(d.PoolStart) {
			return bad("dhcp.pool_end", "%v is before pool_start %v", d.PoolEnd, d.PoolStart)
		}
		p := netip.PrefixFrom(d.PoolStart, d.PrefixLen).Masked()
		if !p.Contains(d.PoolEnd) {
			return bad("dhcp.pool_end", "%v is not in %v with pool_start: fix the pool or prefix_len", d.PoolEnd, p)
		}
		if s.Address.IsValid() && !p.Contains(s.Address) {
			return bad("address", "%v is not in the pool's subnet %v", s.Address, p)
		}
	}
	if d.LeaseTime.Duration == 0 {
		d.LeaseTime.Duration = dhcp.DefaultLeaseTime
	}
	if d.LeaseTime.Duration < time.Minute {
		return bad("dhcp.lease_time", "%v: at least 1m", d.LeaseTime.Duration)
	}
	if d.Option == 0 {
		d.Option = int(dhcp.DefaultURLOption)
	}
	if d.Option < 224 || d.Option > 254 {
		return bad("dhcp.option", "%d: use a site-specific option, 224–254", d.Option)
	}
	if d.BootFileBIOS == "" {
		d.BootFileBIOS = dhcp.DefaultBootFileBIOS
	}
	if d.BootFileUEFI == "" {
		d.BootFileUEFI = dhcp.DefaultBootFileUEFI
	}
	// [tftp]
	if s.TFTP.Listen == "" {
		s.TFTP.Listen = ":69"
	}
	if s.TFTP.Root == "" {
		s.TFTP.Root = DefaultTFTPRoot
	}
	// [tracker]
	if s.Tracker.Interval.Duration == 0 {
		s.Tracker.Interval.Duration = 10 * time.Second
	}
	for i, g := range s.Tracker.Groups {
		if g.Name == "" || len(g.Prefixes) == 0 {
			return bad(fmt.Sprintf("tracker.group[%d]", i), "needs a name and prefixes")
		}
	}
	// [seed]
	if s.Seed.Port == 0 {
		s.Seed.Port = 6881
	}
	if s.Seed.Port < 1 || s.Seed.Port+len(s.Images) > 65535 {
		return bad("seed.port", "%d: out of range", s.Seed.Port)
	}
	// [[image]]
	if len(s.Images) == 0 {
		return bad("image", "no [[image]]: add one with a torrent and its source files")
	}
	names := map[string]bool{}
	for i := range s.Images {
		im := &s.Images[i]
		key := fmt.Sprintf("image[%d]", i)
		if len(im.Source) == 0 {
			return bad(key+".source", "the server seeds every image: list its source file(s)")
		}
		if im.Torrent == "" && len(im.Source) != 1 {
			return bad(key+".torrent", "a torrent is needed for a multi-part image (make one with pxeswarm mktorrent)")
		}
		if im.Name == "" && im.Torrent == "" {
			im.Name = strings.TrimSuffix(filepath.Base(im.Source[0]), filepath.Ext(im.Source[0]))
		}
		if im.Name != "" {
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
	if p.Disk == "" && p.Label == "" && p.GUID == "" && p.Partition == 0 {
		p.Disk = "first"
	}
	if (protocol.Target{Disk: p.Disk, Partition: p.Partition, Label: p.Label, GUID: p.GUID}).Check() != nil {
		return bad("plan.disk", "set exactly one of disk, label or guid (partition goes with disk)")
	}
	if p.Check == "" {
		p.Check = "verify"
	}
	if p.Check != "fresh" && p.Check != "verify" {
		return bad("plan.check", "%q: want fresh or verify", p.Check)
	}
	if p.SeedFor.Duration == 0 {
		p.SeedFor.Duration = 10 * time.Minute
	}
	if p.SeedFor.Duration < 0 {
		return bad("plan.seed_for", "negative")
	}
	if p.After == "" {
		p.After = "reboot"
	}
	if !slices.Contains([]string{"reboot", "poweroff", "shell"}, p.After) {
		return bad("plan.after", "%q: want reboot, poweroff or shell", p.After)
	}
	if p.Auto == "" {
		p.Auto = "none"
	}
	if !slices.Contains([]string{"none", "known", "all"}, p.Auto) {
		return bad("plan.auto", "%q: want none, known or all", p.Auto)
	}
	// [[machine]]
	macs := map[string]bool{}
	for i := range s.Machines {
		m := &s.Machines[i]
		key := fmt.Sprintf("machine[%d].mac", i)
		mac, err := protocol.ParseMAC(m.MAC)
		if err != nil {
			return bad(key, "%q: %v", m.MAC, err)
		}
		if macs[mac] {
			return bad(key, "%s is listed twice", mac)
		}
		macs[mac] = true
		m.MAC = mac
	}
	return nil
}

// PlanTarget is the [plan] section's target as a plan Target.
func (p SitePlan) PlanTarget() protocol.Target {
	return protocol.Target{Disk: p.Disk, Partition: p.Partition, Label: p.Label, GUID: p.GUID}
}
