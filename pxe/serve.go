package pxe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/pxe/dhcp"
	"github.com/pxeswarm/pxeswarm/tracker"
)

// Ready is logged once every service of Start listens; tests and admins
// wait for it.
const Ready = "pxeswarm serve: ready"

// Start runs the whole boot server the site describes: DHCP, TFTP, HTTP
// (with the tracker on the same port) and a trusted seeder per image. It
// blocks until ctx is done or a service fails, and returns nil on
// cancellation.
func (s *Site) Start(ctx context.Context, log *slog.Logger) error {
	if err := s.Check(); err != nil {
		return err
	}
	if err := os.MkdirAll(s.StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir %s: %w (set state_dir to a writable folder)", s.StateDir, err)
	}
	if err := s.resolveAddress(); err != nil {
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
	images, err := s.loadImages(ctx, log)
	if err != nil {
		return err
	}
	store, err := OpenStore(filepath.Join(s.StateDir, "tasks.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	for _, m := range s.Machines {
		if err := store.PutMachine(Machine{MAC: m.MAC, Name: m.Name, Group: m.Group}); err != nil {
			return err
		}
	}

	// The tracker shares the HTTP port: /announce next to the plans.
	tcfg := tracker.Config{Interval: s.Tracker.Interval.Duration}
	for _, g := range s.Tracker.Groups {
		tcfg.Groups = append(tcfg.Groups, tracker.Group{Name: g.Name, Prefixes: g.Prefixes})
	}
	for _, im := range images {
		tcfg.Published = append(tcfg.Published, tracker.Published{InfoHash: im.Image.InfoHash, Name: im.Image.Name})
	}
	tr, err := tracker.New(tcfg, log.With("service", "tracker"))
	if err != nil {
		return err
	}
	announce := s.PublicURL + "/announce"

	defaults := PlanDefaults{Target: s.Plan.PlanTarget(), CreateTable: s.Plan.CreateTable,
		CheckMode: s.Plan.Check, SeedFor: s.Plan.SeedFor.Duration.String(), After: s.Plan.After}
	defaultImage := s.Plan.Image
	if defaultImage == "" && len(s.Images) == 1 {
		defaultImage = images[0].name
	}
	backend := &autoBackend{Store: store, mode: s.Plan.Auto, image: defaultImage, settings: defaults, log: log,
		known: map[string]bool{}, tasked: map[string]bool{}}
	for _, m := range s.Machines {
		backend.known[m.MAC] = true
	}
	hcfg := HTTPConfig{
		Listen: s.HTTP.Listen, PublicURL: s.PublicURL, Store: store, Backend: backend, Key: key,
		Kernel: s.HTTP.Kernel, Initramfs: s.HTTP.Initramfs, Cmdline: s.HTTP.Cmdline,
		Images: map[string]HTTPImage{}, Trackers: []string{announce}, Defaults: defaults,
		AdminToken: token, Tracker: tr.Handler(), Swarms: func() any { return tr.Stats() },
	}
	for _, im := range images {
		hi := HTTPImage{Image: im.Image, Torrent: im.torrent}
		if s.Seed.WebSeed {
			hi.Data = im.source
		}
		hcfg.Images[im.name] = hi
	}
	hlog := log.With("service", "http")
	hsrv, err := hcfg.newServer(hlog) // checks the config before anything listens
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http: listen on %s: is another web server using the port? set http.listen: %w", s.HTTP.Listen, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hcfg.serve(ctx, hlog, ln, hsrv) })

	if s.DHCP.Mode != "off" {
		seen := make(chan Machine, 256)
		dcfg := dhcp.Config{
			Mode: dhcp.Mode(s.DHCP.Mode), Interface: s.Interface, ServerIP: s.Address,
			PoolStart: s.DHCP.PoolStart, PoolEnd: s.DHCP.PoolEnd, PrefixLen: s.DHCP.PrefixLen,
			Router: s.DHCP.Router, DNS: s.DHCP.DNS, LeaseTime: s.DHCP.LeaseTime.Duration,
			LeaseFile:    filepath.Join(s.StateDir, "dhcp-leases.json"),
			BootFileBIOS: s.DHCP.BootFileBIOS, BootFileUEFI: s.DHCP.BootFileUEFI,
			URLOption: uint8(s.DHCP.Option), ServerURL: s.PublicURL + "/",
			// Only machines with a task load iPXE; the others boot their
			// disk straight from the firmware. On a store error, let iPXE
			// ask: its script falls back to the local disk too.
			Boot: func(mac net.HardwareAddr) bool {
				_, ok, err := backend.ActiveTask(mac.String())
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
		g.Go(func() error {
			for {
				select {
				case m := <-seen:
					if err := store.SeeMachine(m.MAC, m.IP, m.Arch); err != nil {
						log.Warn("store: record machine", "mac", m.MAC, "err", err)
					}
				case <-ctx.Done():
					return nil
				}
			}
		})
		g.Go(func() error { return dcfg.Start(ctx, log.With("service", "dhcp")) })
	}
	if s.TFTP.Listen != "off" {
		tf := TFTPConfig{Listen: s.TFTP.Listen, Root: s.TFTP.Root}
		g.Go(func() error { return tf.Start(ctx, log.With("service", "tftp")) })
	}
	for k, im := range images {
		cfg := imager.Config{Image: im.Image, Paths: im.source, Mode: imager.ModeSeed,
			Listen: fmt.Sprintf(":%d", s.Seed.Port+k), Trackers: []string{announce}}
		cfg.Tuning.UploadLimit = int64(s.Seed.UploadLimit)
		slog := log.With("service", "seed", "image", im.name)
		g.Go(func() error {
			p, err := cfg.Run(ctx, slog, -1)
			slog.Info("seed stopped", "uploaded_bytes", p.Uploaded)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("seed %s: %w", im.name, err)
			}
			return nil
		})
	}
	names := make([]string, len(images))
	for i, im := range images {
		names[i] = im.name
	}
	log.Info(Ready, "url", s.PublicURL, "dhcp", s.DHCP.Mode, "interface", s.Interface,
		"images", strings.Join(names, ","), "auto", s.Plan.Auto,
		"plan_key", filepath.Join(s.StateDir, "plan-key.pub"), "admin_token_file", s.tokenFile())
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// resolveAddress fills Address from the interface and PublicURL from it.
func (s *Site) resolveAddress() error {
	if !s.Address.IsValid() && s.Interface != "" {
		ifi, err := net.InterfaceByName(s.Interface)
		if err != nil {
			return fmt.Errorf("%w: interface %q: %w (list them with ip link)", ErrBadConfig, s.Interface, err)
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				s.Address = p.Addr()
				break
			}
		}
		if !s.Address.IsValid() {
			return fmt.Errorf("%w: interface %s has no IPv4 address: give it one (ip addr add) or set address", ErrBadConfig, s.Interface)
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

type loadedImage struct {
	name    string
	Image   *imager.Image
	torrent string // path of the .torrent file
	source  []string
}

// loadImages opens every [[image]]'s torrent, or makes one from a raw
// source file (cached in <state_dir>/images while the source's size and
// modification time stay the same).
func (s *Site) loadImages(ctx context.Context, log *slog.Logger) ([]loadedImage, error) {
	var out []loadedImage
	for i, si := range s.Images {
		for _, src := range si.Source {
			if _, err := os.Stat(src); err != nil {
				return nil, fmt.Errorf("%w: image[%d].source: %w", ErrBadConfig, i, err)
			}
		}
		path := si.Torrent
		if path == "" {
			var err error
			if path, err = s.makeTorrent(ctx, log, si); err != nil {
				return nil, err
			}
		}
		im, err := imager.LoadFile(path)
		if err != nil {
			return nil, fmt.Errorf("image[%d]: %w", i, err)
		}
		if len(im.Files) != len(si.Source) {
			return nil, fmt.Errorf("%w: image[%d]: the torrent has %d parts but source lists %d files: list one source per part, in order", ErrBadConfig, i, len(im.Files), len(si.Source))
		}
		name := si.Name
		if name == "" {
			name = im.Name
		}
		out = append(out, loadedImage{name: name, Image: im, torrent: path, source: si.Source})
	}
	return out, nil
}

type torrentCache struct {
	Source      string    `json:"source"`
	Size        int64     `json:"size"`
	ModTime     time.Time `json:"mod_time"`
	PieceLength int64     `json:"piece_length"`
	InfoHash    string    `json:"info_hash"`
}

func (s *Site) makeTorrent(ctx context.Context, log *slog.Logger, si SiteImage) (string, error) {
	dir := filepath.Join(s.StateDir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	src := si.Source[0]
	st, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	size := st.Size()
	if dev, err := imager.OpenSource(src); err == nil {
		size = dev.Size
		dev.Close()
	}
	piece := int64(si.PieceLength)
	if piece == 0 {
		piece = imager.PieceLengthFor(size)
	}
	want := torrentCache{Source: src, Size: size, ModTime: st.ModTime().UTC(), PieceLength: piece}
	path := filepath.Join(dir, si.Name+".torrent")
	meta := path + ".json"
	if b, err := os.ReadFile(meta); err == nil {
		var have torrentCache
		if json.Unmarshal(b, &have) == nil {
			have.InfoHash, want.InfoHash = "", ""
			if have == want {
				if _, err := os.Stat(path); err == nil {
					log.Info("image: torrent cached", "image", si.Name, "torrent", path)
					return path, nil
				}
			}
		}
	}
	log.Info("image: making torrent (hashing the whole source once; cached afterwards)", "image", si.Name, "source", src, "size", bytesize.Format(size))
	last := time.Now()
	im, err := imager.Create(ctx, log, imager.CreateConfig{Name: si.Name, Sources: []string{src}, PieceLength: piece,
		Progress: func(p imager.Progress) {
			if time.Since(last) >= 5*time.Second {
				last = time.Now()
				log.Info("image: hashing", "image", si.Name, "progress", p.Line())
			}
		}})
	if err != nil {
		return "", fmt.Errorf("image %s: make torrent from %s: %w", si.Name, src, err)
	}
	if err := im.WriteFile(path); err != nil {
		return "", err
	}
	want.InfoHash = im.InfoHash.HexString()
	b, _ := json.MarshalIndent(want, "", "  ")
	if err := os.WriteFile(meta, b, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// autoBackend is the Store, plus the [plan] auto policy: a machine that
// boots with no active task gets one for the default image if the policy
// covers it and it never had a task for that image.
type autoBackend struct {
	*Store
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
