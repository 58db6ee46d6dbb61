package pxe

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/pxe/console"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"
)

// Backend answers the boot path's question "which task does this MAC
// get?" and takes what the terminals tell us. *Store implements it; tests
// use canned fakes. (The seam of smee's BackendReader and pixiecore's
// Booter.)
type Backend interface {
	// ActiveTask returns mac's active task, and false if it has none.
	// The GET routes call it, so it must change nothing.
	ActiveTask(mac string) (Task, bool, error)
	// Report applies an agent's status report (see Store.Report). The
	// HTTP layer has checked the report token first.
	Report(mac string, r protocol.Report) (Task, error)
	// Task returns one task by ID (ErrNoTask if there is none).
	Task(id string) (Task, error)
	// ReportToken returns a task's report token (see Store.ReportToken).
	ReportToken(id string) (string, error)
}

var _ Backend = (*Store)(nil)

// PlanDefaults are the plan settings of tasks that do not set their own.
// Zero fields take Target {disk: "first"}, CheckMode "fresh", After
// "reboot" and OnError "halt"; SeedFor empty means no seeding after
// completion.
type PlanDefaults = TaskSettings

// HTTPConfig configures the boot server's HTTP side: iPXE scripts,
// kernel and initramfs, torrents and web seeds, signed plans, agent
// reports, the read API and the admin API. Optionally the tracker shares
// the port.
type HTTPConfig struct {
	// Listen is the TCP address, for example ":8080".
	Listen string
	// HTTPSListen, if set, is a second TCP address, for example ":8443",
	// that serves the same routes over TLS with TLSCert. The admin API
	// then answers only there: an admin request over plain HTTP gets 403
	// naming HTTPSURL, so the token has no reason to cross the LAN in
	// clear. The agent's routes (boot files, plans, reports, torrents,
	// web seeds, the tracker) stay on plain HTTP too: iPXE and the agent
	// use it, and the plan is signed.
	HTTPSListen string
	// HTTPSURL is how admins reach HTTPSListen, for example
	// "https://198.18.0.1:8443"; the 403 names it.
	HTTPSURL string
	// TLSCert is the HTTPS certificate (TLSConfig.Load); required with
	// HTTPSListen.
	TLSCert *tls.Certificate
	// PublicURL is how terminals reach this server, without a trailing
	// slash, for example "http://198.18.0.1:8080". It goes into iPXE
	// scripts, the kernel command line (pxeswarm.server=) and plans.
	PublicURL string
	// Store holds machines and tasks; the read and admin API need it.
	Store *Store
	// Backend answers the boot path (scripts, plans, reports). Nil: Store.
	Backend Backend
	// Key signs plans. Required (LoadOrCreateKey).
	Key ed25519.PrivateKey
	// Kernel and Initramfs are the files served at /boot/vmlinuz and
	// /boot/initramfs. Empty: those answer 404 and no task can boot.
	Kernel, Initramfs string
	// InitramfsAppend, if set, is sent after the Initramfs file's bytes
	// (after zeros up to a 4-byte boundary): KeyArchive, the server's
	// public plan key for an initramfs built without one (the Debian
	// package's). Range requests see the joined bytes.
	InitramfsAppend []byte
	// Cmdline is extra kernel arguments, for example "console=ttyS0".
	Cmdline string
	// Shim and Grub are Debian's signed shim and GRUB netboot image
	// (DefaultShim, DefaultGrub), served at /boot/shimx64.efi and
	// /boot/grubx64.efi for UEFI HTTP boot; GRUB's configs are at
	// /grub/grub.cfg and /grub/<mac>.cfg (grub.go). Empty: 404.
	Shim, Grub string
	// IPXE is iPXE for x86-64 UEFI, served at /boot/ipxe.efi for UEFI
	// HTTP boot when the site's UEFI loader is iPXE. Empty: 404.
	IPXE string
	// Catalog holds the published images; a task names one of them.
	// Torrents, web seeds (for images with WebSeed) and plans are served
	// from it at request time, and POST and DELETE /api/images change it.
	// Nil: an empty catalog.
	Catalog *catalog.Catalog
	// Captures, if set, serves image capture (/api/captures: see
	// http_capture.go); nil turns those routes off (403).
	Captures *Captures
	// ImageDirs are the folders whose files POST /api/images may publish
	// (absolute; symbolic links are resolved before the check). Empty:
	// that route answers 403.
	ImageDirs []string
	// Trackers are announce URLs put into plans (empty: the torrent's).
	Trackers []string
	// Seeders, if set, gives the peer addresses (host:port) of an image's
	// seeder on this host, put into plans so an agent dials it at once
	// whatever its first announce does.
	Seeders func(image string) []string
	// Defaults are the plan settings of tasks that leave them out.
	Defaults PlanDefaults
	// AdminToken guards the admin API (Authorization: Bearer <token>).
	// Empty disables the admin API (403).
	AdminToken string
	// Tracker, if set, is mounted at /announce, /scrape and /stats so one
	// port serves everything (tracker.Tracker's Handler).
	Tracker http.Handler
	// Swarms, if set, answers GET /api/swarms (for example the tracker's
	// Stats).
	Swarms func() any
	// Console configures the web console (package console): its pages,
	// login and sessions. It needs Store; the zero value serves it with
	// login by AdminToken only.
	Console HTTPConsole
	// Wake, if set, sends Wake-on-LAN packets (POST /api/wake, and POST
	// /api/tasks with "wake"); nil: those answer 403.
	Wake *Waker
	// Scheduler, if set, serves /api/schedules (schedules live in Store;
	// it fires them); nil: its POST and DELETE answer 403.
	Scheduler *Scheduler
	// MaxBody bounds request bodies; 0 means DefaultMaxBody.
	MaxBody int64
	// MaxConns caps the connections served at once; 0 means
	// DefaultMaxConns. Past it, new connections wait to be accepted, so
	// one LAN host cannot hold every goroutine and file descriptor; an
	// idle or slow one is closed after the header and read timeouts.
	MaxConns int
}

// HTTPConsole configures the web console served on the HTTP port.
type HTTPConsole struct {
	// Off turns the console off: its pages answer 404.
	Off bool
	// PasswordHash, if set, is a bcrypt hash of a site password that logs
	// in besides the admin token.
	PasswordHash string
	// OpenRoom shows the room page (read-only) and its event stream to
	// anyone who can reach the server, without login.
	OpenRoom bool
	// SessionTTL is how long a login lasts; 0 means
	// console.DefaultSessionTTL.
	SessionTTL time.Duration
}

// DefaultMaxBody is the default bound on report and admin request bodies.
const DefaultMaxBody = 64 << 10

// DefaultMaxConns is the default cap on connections served at once: a
// room of a few hundred terminals uses a few each (reports, the torrent,
// kernel and initramfs).
const DefaultMaxConns = 1024

// ErrBadHTTPConfig wraps HTTPConfig validation errors.
var ErrBadHTTPConfig = errors.New("bad HTTP config")

// bootServer is the handler built from an HTTPConfig.
type bootServer struct {
	cfg      HTTPConfig
	log      *slog.Logger
	backend  Backend
	cat      *catalog.Catalog
	tokenSum [sha256.Size]byte // of AdminToken, for a constant-time compare
	started  time.Time
	mux      *http.ServeMux
	console  *console.Console // nil when off or without a Store
	flows    flows            // who fed whom, from token-checked reports
}

// Handler returns the server's handler. Its logs go nowhere; use
// HandlerWithLog to keep them.
func (c HTTPConfig) Handler() (http.Handler, error) { return c.HandlerWithLog(nil) }

// HandlerWithLog checks the config and returns the server's handler,
// logging to log (nil: discard).
func (c HTTPConfig) HandlerWithLog(log *slog.Logger) (http.Handler, error) {
	s, err := c.newServer(log)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (c HTTPConfig) newServer(log *slog.Logger) (*bootServer, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadHTTPConfig, fmt.Sprintf(format, args...))
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &bootServer{cfg: c, log: log, backend: c.Backend, cat: c.Catalog, started: time.Now()}
	if s.cat == nil {
		s.cat = catalog.New(catalog.Config{}, log)
	}
	if s.backend == nil {
		if c.Store == nil {
			return nil, bad("no Store or Backend: open a store (OpenStore) for machines and tasks")
		}
		s.backend = c.Store
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		strings.HasSuffix(c.PublicURL, "/") || strings.ContainsAny(c.PublicURL, " \t\r\n\"'${}") {
		return nil, bad("PublicURL %q: want the URL terminals reach this server at, such as http://198.18.0.1:8080 (no trailing slash)", c.PublicURL)
	}
	if len(c.Key) != ed25519.PrivateKeySize {
		return nil, bad("no plan signing key: load one with LoadOrCreateKey")
	}
	if strings.ContainsAny(c.Cmdline, "\r\n") {
		return nil, bad("Cmdline has a line break: put all kernel arguments on one line")
	}
	for _, p := range []struct{ name, path string }{{"Kernel", c.Kernel}, {"Initramfs", c.Initramfs}} {
		if p.path == "" {
			continue
		}
		if st, err := os.Stat(p.path); err != nil || !st.Mode().IsRegular() {
			return nil, bad("%s %s is not a readable file: build it (pxeswarm build initramfs) or fix the path", p.name, p.path)
		}
	}
	for _, p := range []struct{ name, path string }{{"Shim", c.Shim}, {"Grub", c.Grub}} {
		if p.path == "" {
			continue
		}
		if st, err := os.Stat(p.path); err != nil || !st.Mode().IsRegular() {
			return nil, bad("%s %s is not a readable file: install Debian's shim-signed and grub-efi-amd64-signed (scripts/deps.sh), or set the UEFI loader to ipxe", p.name, p.path)
		}
	}
	if s.cfg.MaxBody <= 0 {
		s.cfg.MaxBody = DefaultMaxBody
	}
	s.cfg.Defaults = withPlanDefaults(c.Defaults, PlanDefaults{})
	if err := s.checkSettings(s.cfg.Defaults); err != nil {
		return nil, bad("Defaults: %v", err)
	}
	for _, tr := range c.Trackers {
		if u, err := url.Parse(tr); err != nil || u.Host == "" {
			return nil, bad("tracker %q: want an announce URL such as http://198.18.0.1:8080/announce", tr)
		}
	}
	if c.AdminToken != "" {
		s.tokenSum = sha256.Sum256([]byte(c.AdminToken))
	}
	if c.HTTPSListen != "" {
		if c.TLSCert == nil || len(c.TLSCert.Certificate) == 0 {
			return nil, bad("HTTPSListen without TLSCert: load one with TLSConfig.Load")
		}
		if u, err := url.Parse(c.HTTPSURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, bad("HTTPSURL %q: want the URL admins reach the HTTPS listener at, such as https://198.18.0.1:8443", c.HTTPSURL)
		}
	}
	for _, dir := range c.ImageDirs {
		if !filepath.IsAbs(dir) {
			return nil, bad("ImageDirs: %q is not an absolute folder", dir)
		}
	}
	if !c.Console.Off && c.Store != nil {
		s.console, err = console.New(console.Config{AdminToken: c.AdminToken, PasswordHash: c.Console.PasswordHash,
			SessionTTL: c.Console.SessionTTL, OpenRoom: c.Console.OpenRoom, HTTPSURL: c.HTTPSURL, Snapshot: s.snapshot}, log)
		if err != nil {
			return nil, bad("%v", err)
		}
	}
	s.mux = s.routes()
	return s, nil
}

// torrentFile is what GET /torrents/{name}.torrent returns: the torrent
// as loaded, or, for a web-seeded image, with our web seed added to its
// url-list. url-list sits outside the info dictionary, so the info-hash
// (and the signed plan's pin) does not change.
func (s *bootServer) torrentFile(im *catalog.Image) ([]byte, error) {
	if !s.webSeeded(im) {
		return im.Torrent, nil
	}
	mi := *im.Image.Meta
	mi.UrlList = append(append([]string(nil), mi.UrlList...), s.webSeedURL(im.Name))
	return bencode.Marshal(mi)
}

// webSeeded reports whether HTTP serves im's data (BEP 19).
func (s *bootServer) webSeeded(im *catalog.Image) bool { return im.WebSeed && len(im.Source) > 0 }

// withPlanDefaults fills d's empty fields from def, then the built-in
// defaults.
func withPlanDefaults(d, def PlanDefaults) PlanDefaults {
	if d.Target == (protocol.Target{}) {
		d.Target = def.Target
	}
	if d.Target == (protocol.Target{}) {
		d.Target = protocol.Target{Disk: "first"}
	}
	d.CheckMode = cmp.Or(d.CheckMode, def.CheckMode, "fresh")
	d.After = cmp.Or(d.After, def.After, "reboot")
	d.OnError = cmp.Or(d.OnError, def.OnError, protocol.OnErrorHalt)
	d.SeedFor = cmp.Or(d.SeedFor, def.SeedFor)
	return d
}

// checkSettings validates plan settings by the plan's own rules.
func (s *bootServer) checkSettings(ts TaskSettings) error {
	p := protocol.Plan{MAC: "00:00:00:00:00:00", TaskID: "check", Action: protocol.ActionDeploy, Image: "check", Torrent: "check",
		Nonce: strings.Repeat("0", 32), ReportToken: strings.Repeat("0", 48),
		InfoHash: strings.Repeat("0", 40), Target: ts.Target, CreateTable: ts.CreateTable, Discard: ts.Discard,
		CheckMode: ts.CheckMode, SeedFor: ts.SeedFor, After: ts.After, OnError: ts.OnError}
	if err := p.Check(); err != nil {
		// Drop "bad plan: ": the caller says what was checked.
		return errors.New(strings.TrimPrefix(err.Error(), protocol.ErrBadPlan.Error()+": "))
	}
	return nil
}

// webSeedURL is the BEP 19 url-list entry for an image. It ends in "/":
// clients append the torrent's name and the file's path (multi-file
// layout), see serveImageData.
func (s *bootServer) webSeedURL(name string) string {
	return s.cfg.PublicURL + "/images/" + url.PathEscape(name) + "/"
}

// torrentURL is where terminals fetch an image's torrent.
func (s *bootServer) torrentURL(name string) string {
	return s.cfg.PublicURL + "/torrents/" + url.PathEscape(name) + ".torrent"
}

// seeders is what a plan for image carries as Plan.Seeders (at most
// protocol.MaxSeeders).
func (s *bootServer) seeders(image string) []string {
	if s.cfg.Seeders == nil {
		return nil
	}
	a := s.cfg.Seeders(image)
	return a[:min(len(a), protocol.MaxSeeders)]
}

func (s *bootServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// shutdownTimeout bounds the graceful shutdown in Serve.
const shutdownTimeout = 5 * time.Second

// Start listens on Listen (and HTTPSListen, if set) and serves until ctx
// is done; it returns nil then.
func (c HTTPConfig) Start(ctx context.Context, log *slog.Logger) error {
	if c.Listen == "" {
		return fmt.Errorf("%w: Listen is empty: set the HTTP listen address, e.g. \":8080\"", ErrBadHTTPConfig)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("http: listen on %s: pick a free port or stop whatever holds it: %w", c.Listen, err)
	}
	var tln net.Listener
	if c.HTTPSListen != "" {
		if tln, err = lc.Listen(ctx, "tcp", c.HTTPSListen); err != nil {
			ln.Close()
			return fmt.Errorf("https: listen on %s: pick a free port or stop whatever holds it: %w", c.HTTPSListen, err)
		}
	}
	return c.ServeTLS(ctx, log, ln, tln)
}

// Serve is Start on an existing listener, which it closes (plain HTTP
// only: see ServeTLS).
func (c HTTPConfig) Serve(ctx context.Context, log *slog.Logger, ln net.Listener) error {
	return c.ServeTLS(ctx, log, ln, nil)
}

// ServeTLS is Start on existing listeners, which it closes: ln for plain
// HTTP and, with HTTPSListen set, tln for HTTPS (nil otherwise).
func (c HTTPConfig) ServeTLS(ctx context.Context, log *slog.Logger, ln, tln net.Listener) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := c.newServer(log)
	if err == nil && (tln != nil) != (c.HTTPSListen != "") {
		err = fmt.Errorf("%w: an HTTPS listener goes with HTTPSListen, and only with it", ErrBadHTTPConfig)
	}
	if err != nil {
		ln.Close()
		if tln != nil {
			tln.Close()
		}
		return err
	}
	if tln == nil {
		return c.serve(ctx, log, ln, s, nil)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.serve(ctx, log, ln, s, nil) })
	g.Go(func() error { return c.serve(ctx, log, tln, s, c.TLSCert) })
	return g.Wait()
}

// serve runs an already built server on ln until ctx ends; over TLS with
// cert when it is not nil.
func (c HTTPConfig) serve(ctx context.Context, log *slog.Logger, ln net.Listener, s *bootServer, cert *tls.Certificate) error {
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	ln = netutil.LimitListener(ln, c.MaxConns)
	scheme := "http"
	if cert != nil {
		// TLS outside the limit, so that handlers see the *tls.Conn
		// (r.TLS is how the admin check tells HTTPS from HTTP).
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	// No write timeout: kernel, initramfs and web-seed downloads are long.
	// Reads are short: bodies are reports and admin calls (MaxBody).
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if s.console != nil {
		srv.RegisterOnShutdown(s.console.Close) // ends the console's event streams
	}
	if cert != nil {
		log.Info("https: serving", "addr", ln.Addr().String(), "url", c.HTTPSURL, "fingerprint", Fingerprint(cert.Certificate[0]),
			"admin_api", c.AdminToken != "")
	} else {
		log.Info("http: serving", "addr", ln.Addr().String(), "public_url", c.PublicURL, "images", len(s.cat.List()),
			"admin_api", c.AdminToken != "" && c.HTTPSListen == "", "tracker", c.Tracker != nil)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: serving on %s: %w", scheme, ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Web seed and kernel downloads can be long; cut them.
		log.Warn("http: graceful shutdown timed out; closing connections", "err", err)
		srv.Close()
	}
	<-errc
	log.Info(scheme+": stopped", "addr", ln.Addr().String())
	return nil
}
