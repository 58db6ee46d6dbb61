// Package console owns pxeswarm's web console: the pages an admin runs a
// room from (room, machine, images, tasks, swarm, schedules), their
// embedded templates and scripts, the live status stream (GET
// /api/events, Server-Sent Events), and access to them: login with the
// admin token or a site password, session cookies, and the CSRF check
// every change made with a session must pass.
//
// The pages are thin: html/template renders the frame (navigation, the
// session's CSRF token, stable data-test markers) and plain JavaScript
// fills it from the same JSON API the CLI uses. The console never reads
// the store itself; the server hands it a Snapshot function for the
// event stream, and asks it (Console.CheckChange) whether a request
// without a Bearer token may change anything.
package console

import (
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// DefaultSessionTTL is how long a login lasts when Config.SessionTTL is 0.
const DefaultSessionTTL = 8 * time.Hour

// ErrBadConfig wraps Config validation errors.
var ErrBadConfig = errors.New("bad console config")

// Config configures the console.
type Config struct {
	// AdminToken is the server's admin token: logging in with it opens a
	// session. Empty: only PasswordHash logs in (and with neither, nobody
	// can log in).
	AdminToken string
	// PasswordHash, if set, is a bcrypt hash ($2a$/$2b$/$2y$) of a site
	// password that logs in too.
	PasswordHash string
	// SessionTTL is how long a session lasts from login; 0 means
	// DefaultSessionTTL.
	SessionTTL time.Duration
	// OpenRoom lets anyone who can reach the server see the room page and
	// its event stream without logging in (read-only: no buttons, and no
	// change is accepted without a session). Default false.
	OpenRoom bool
	// HTTPSURL, if set, is where the console lives: pages asked for over
	// plain HTTP are redirected there and sessions only work over TLS.
	HTTPSURL string
	// Snapshot returns what GET /api/events pushes (marshalled as JSON):
	// the machines with their active tasks. Required.
	Snapshot func() (any, error)
	// Interval is how often the event stream looks for a change; 0 means
	// one second.
	Interval time.Duration
	// MaxStreams caps the event streams open at once; 0 means 64.
	MaxStreams int
}

// Console serves the pages and holds the sessions. Make it with New.
type Console struct {
	cfg      Config
	log      *slog.Logger
	tokenSum [sha256.Size]byte
	pages    map[string]*template.Template
	sessions *sessions
	limiter  *limiter
	streams  chan struct{} // one slot per open event stream
	closed   chan struct{}
	close    sync.Once
}

// New checks cfg and returns the console, logging to log (nil: discard).
func New(cfg Config, log *slog.Logger) (*Console, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Snapshot == nil {
		return nil, fmt.Errorf("%w: no Snapshot function", ErrBadConfig)
	}
	if cfg.PasswordHash != "" {
		if _, err := bcrypt.Cost([]byte(cfg.PasswordHash)); err != nil {
			return nil, fmt.Errorf("%w: the console password hash is not a bcrypt hash (%v): make one with `htpasswd -nbBC 12 \"\" 'password' | tr -d ':\\n'`", ErrBadConfig, err)
		}
	}
	if cfg.SessionTTL < 0 {
		return nil, fmt.Errorf("%w: SessionTTL %v is negative", ErrBadConfig, cfg.SessionTTL)
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	if cfg.HTTPSURL != "" {
		if u, err := url.Parse(cfg.HTTPSURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("%w: HTTPSURL %q: want https://host:port", ErrBadConfig, cfg.HTTPSURL)
		}
	}
	c := &Console{cfg: cfg, log: log, pages: map[string]*template.Template{},
		sessions: newSessions(cfg.SessionTTL), limiter: newLimiter(),
		streams: make(chan struct{}, cfg.MaxStreams), closed: make(chan struct{})}
	if cfg.AdminToken != "" {
		c.tokenSum = sha256.Sum256([]byte(cfg.AdminToken))
	}
	for _, p := range pageNames {
		t, err := template.New("layout.html").Funcs(template.FuncMap{}).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", p, err)
		}
		c.pages[p] = t
	}
	return c, nil
}

// Close ends the open event streams (call it when the server shuts down:
// http.Server.RegisterOnShutdown). Pages keep working.
func (c *Console) Close() { c.close.Do(func() { close(c.closed) }) }

// pageNames are the console's pages; each has templates/<name>.html.
var pageNames = []string{"login", "room", "machine", "images", "tasks", "swarm", "schedules"}

// Register adds the console's routes through handle (method, pattern,
// handler), as the server's mux registers its own.
func (c *Console) Register(handle func(method, path string, h http.HandlerFunc)) {
	handle("GET", "/{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/room", http.StatusSeeOther) })
	handle("GET", "/login", c.serveLoginPage)
	handle("POST", "/login", c.serveLogin)
	handle("POST", "/logout", c.serveLogout)
	handle("GET", "/room", c.page("room", c.cfg.OpenRoom))
	handle("GET", "/machine/{mac}", c.page("machine", false))
	handle("GET", "/images", c.page("images", false))
	handle("GET", "/tasks", c.page("tasks", false))
	handle("GET", "/swarm", c.page("swarm", false))
	handle("GET", "/schedules", c.page("schedules", false))
	handle("GET", "/assets/{file...}", c.serveAsset)
	handle("GET", "/api/events", c.serveEvents)
}

// pageData is what every page template gets.
type pageData struct {
	Page     string
	CSRF     string // empty without a session
	LoggedIn bool
	Param    string // the page's path parameter (the machine's MAC)
	Error    string // the login page's message
	Next     string // the login page's target after login
}

// securityHeaders are sent with every page and asset: scripts and styles
// only from this origin (no inline script, so injected markup cannot run),
// no framing (clickjacking), no sniffing, and no referrer leaving the site.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
}

// toHTTPS redirects a plain-HTTP request to the HTTPS console when one is
// configured, and says whether it did.
func (c *Console) toHTTPS(w http.ResponseWriter, r *http.Request) bool {
	if c.cfg.HTTPSURL == "" || r.TLS != nil {
		return false
	}
	http.Redirect(w, r, c.cfg.HTTPSURL+r.URL.RequestURI(), http.StatusSeeOther)
	return true
}

// page serves one console page; open pages render without a session
// (read-only), the others send the browser to the login page.
func (c *Console) page(name string, open bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.toHTTPS(w, r) {
			return
		}
		sess, ok := c.sessions.get(r)
		if !ok && !open {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		d := pageData{Page: name, LoggedIn: ok, Param: r.PathValue("mac")}
		if ok {
			d.CSRF = sess.csrf
		}
		c.render(w, http.StatusOK, name, d)
	}
}

func (c *Console) render(w http.ResponseWriter, code int, name string, d pageData) {
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := c.pages[name].Execute(w, d); err != nil {
		c.log.Error("console: rendering a page", "page", name, "err", err)
	}
}

// serveAsset serves the embedded scripts and styles.
func (c *Console) serveAsset(w http.ResponseWriter, r *http.Request) {
	sub, _ := fs.Sub(assetFS, "assets")
	if f := r.PathValue("file"); f == "" || strings.HasSuffix(f, "/") || !strings.Contains(f, ".") {
		http.NotFound(w, r) // no folder listings
		return
	}
	securityHeaders(w)
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, sub, r.PathValue("file"))
}

// clientIP is the request's remote address without the port.
func clientIP(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return ap.Addr().Unmap().String()
}

// sameOrigin says whether origin (an Origin header) is this request's
// own scheme://host.
func sameOrigin(r *http.Request, origin string) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(origin, scheme+"://"+r.Host)
}
