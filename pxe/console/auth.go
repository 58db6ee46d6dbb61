package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Cookie names: over TLS the __Host- prefix makes the browser refuse a
// cookie that is not Secure, has a Domain or another Path, so another
// host on the LAN cannot plant one for this server's name.
const (
	cookieName    = "pxeswarm_session"
	cookieNameTLS = "__Host-pxeswarm_session"
	// CSRFHeader carries the session's CSRF token on every change.
	CSRFHeader = "X-CSRF-Token"
	// maxSessions bounds the sessions kept; past it the oldest goes.
	maxSessions = 256
)

// Sentinel errors of CheckChange; the server answers 401 for
// ErrNoSession and 403 for the others.
var (
	ErrNoSession = errors.New("no valid console session: log in again at /login")
	ErrCSRF      = errors.New("missing or wrong " + CSRFHeader + " header: changes need the CSRF token of the console page")
	ErrOrigin    = errors.New("cross-site request refused: the Origin header must be this server")
)

// session is one login.
type session struct {
	csrf    string
	tls     bool // made over HTTPS: valid only over HTTPS
	expires time.Time
	created time.Time
}

// sessions are kept in memory, by the SHA-256 of the cookie value, so a
// memory dump or a timing leak of the map shows no cookie; a restart
// logs everyone out.
type sessions struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[sha256.Size]byte]*session
	now func() time.Time
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, m: map[[sha256.Size]byte]*session{}, now: time.Now}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}

// add makes a session and returns its cookie value.
func (s *sessions) add(tls bool) (string, *session) {
	id := randomHex(32)
	now := s.now()
	sess := &session{csrf: randomHex(32), tls: tls, created: now, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
	for len(s.m) >= maxSessions {
		var oldest [sha256.Size]byte
		var t time.Time
		for k, v := range s.m {
			if t.IsZero() || v.created.Before(t) {
				oldest, t = k, v.created
			}
		}
		delete(s.m, oldest)
	}
	s.m[sha256.Sum256([]byte(id))] = sess
	return id, sess
}

// cookieValue is the session cookie the request carries for its scheme.
func cookieValue(r *http.Request) string {
	name := cookieName
	if r.TLS != nil {
		name = cookieNameTLS
	}
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// get returns the request's session if it has a valid, unexpired one
// made over the same kind of connection.
func (s *sessions) get(r *http.Request) (*session, bool) {
	return s.lookup(cookieValue(r), r.TLS != nil)
}

// lookup finds the session of cookie value v for a connection over TLS
// (or not).
func (s *sessions) lookup(v string, tls bool) (*session, bool) {
	if len(v) != 64 {
		return nil, false
	}
	k := sha256.Sum256([]byte(v))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[k]
	if !ok {
		return nil, false
	}
	if !s.now().Before(sess.expires) {
		delete(s.m, k)
		return nil, false
	}
	if sess.tls != tls {
		return nil, false
	}
	return sess, true
}

// remove ends the request's session.
func (s *sessions) remove(r *http.Request) {
	v := cookieValue(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(v)))
}

// HasSession says whether the request carries a session cookie at all
// (valid or not): the server then judges it by CheckChange instead of
// asking for a Bearer token.
func (c *Console) HasSession(r *http.Request) bool { return cookieValue(r) != "" }

// CheckChange decides whether a request without a Bearer token may
// change something: it needs a valid session cookie, the session's CSRF
// token in the X-CSRF-Token header, and an Origin header naming this
// server (every browser sends one on POST, PUT and DELETE; a cross-site
// page cannot forge it). A Sec-Fetch-Site header, when sent, must say
// same-origin. It returns ErrNoSession, ErrCSRF or ErrOrigin.
func (c *Console) CheckChange(r *http.Request) error {
	sess, ok := c.sessions.get(r)
	if !ok {
		return ErrNoSession
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return ErrOrigin
	}
	if o := r.Header.Get("Origin"); o == "" || !sameOrigin(r, o) {
		return ErrOrigin
	}
	got := r.Header.Get(CSRFHeader)
	if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
		return ErrCSRF
	}
	return nil
}

func (c *Console) serveLoginPage(w http.ResponseWriter, r *http.Request) {
	if c.toHTTPS(w, r) {
		return
	}
	if _, ok := c.sessions.get(r); ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.render(w, http.StatusOK, "login", pageData{Page: "login", Next: safeNext(r.URL.Query().Get("next"))})
}

// safeNext keeps a post-login redirect on this server: a local path of
// printable ASCII, not "//host" or "/\host" (which browsers read as
// another host; they also drop tabs and line breaks, so "/<tab>/host"
// would be one too, and a backslash anywhere is refused).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, `\`) || len(next) > 2048 {
		return "/room"
	}
	for _, c := range next {
		if c <= ' ' || c >= 0x7f {
			return "/room"
		}
	}
	return next
}

// checkSecret says whether secret is the admin token or the site password.
// Both are checked every time, so the answer's timing does not say which
// one was tried.
func (c *Console) checkSecret(secret string) bool {
	if secret == "" {
		return false
	}
	sum := sha256.Sum256([]byte(secret))
	tokenOK := c.cfg.AdminToken != "" && subtle.ConstantTimeCompare(sum[:], c.tokenSum[:]) == 1
	passOK := c.cfg.PasswordHash != "" && bcrypt.CompareHashAndPassword([]byte(c.cfg.PasswordHash), []byte(secret)) == nil
	return tokenOK || passOK
}

// serveLogin answers POST /login (a form with "secret" and "next"): a
// right secret sets the session cookie and redirects to next; a wrong
// one shows the form again (401). Failures are rate limited per client
// address, and a login from another site (Origin) is refused, so a page
// elsewhere cannot log a browser into a session of the attacker's.
func (c *Console) serveLogin(w http.ResponseWriter, r *http.Request) {
	if c.toHTTPS(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	ip := clientIP(r)
	next := safeNext(r.PostFormValue("next"))
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(r, o) {
		c.log.Warn("console: cross-site login refused", "client", ip, "origin", o)
		c.render(w, http.StatusForbidden, "login", pageData{Page: "login", Next: next, Error: "Login from another site refused."})
		return
	}
	if wait := c.limiter.blocked(ip); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		c.render(w, http.StatusTooManyRequests, "login", pageData{Page: "login", Next: next,
			Error: "Too many failed logins from this address: wait a minute and try again."})
		return
	}
	if !c.checkSecret(r.PostFormValue("secret")) {
		c.limiter.fail(ip)
		c.log.Warn("console: login failed", "client", ip)
		c.render(w, http.StatusUnauthorized, "login", pageData{Page: "login", Next: next,
			Error: "Wrong admin token or password."})
		return
	}
	id, _ := c.sessions.add(r.TLS != nil)
	name := cookieName
	if r.TLS != nil {
		name = cookieNameTLS
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.cfg.SessionTTL / time.Second)})
	c.log.Info("console: login", "client", ip, "tls", r.TLS != nil)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// serveLogout answers POST /logout; like every change it needs the CSRF
// token (a form field here) and a same-site Origin.
func (c *Console) serveLogout(w http.ResponseWriter, r *http.Request) {
	sess, ok := c.sessions.get(r)
	if ok {
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(r, o) ||
			subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(sess.csrf)) != 1 {
			http.Error(w, ErrCSRF.Error(), http.StatusForbidden)
			return
		}
		c.sessions.remove(r)
		c.log.Info("console: logout", "client", clientIP(r))
	}
	name := cookieName
	if r.TLS != nil {
		name = cookieNameTLS
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// limiter counts failed logins per client address: after maxFails within
// failWindow, that address waits out the window. Bounded in size: past
// maxClients the table is cleared (then an attacker with many addresses
// gets a fresh budget, but one address cannot grow memory).
type limiter struct {
	mu  sync.Mutex
	m   map[string]*failures
	now func() time.Time
}

type failures struct {
	n     int
	start time.Time
}

const (
	maxFails   = 5
	failWindow = time.Minute
	maxClients = 4096
)

func newLimiter() *limiter { return &limiter{m: map[string]*failures{}, now: time.Now} }

// blocked returns how long ip must wait, or 0.
func (l *limiter) blocked(ip string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.m[ip]
	if !ok {
		return 0
	}
	left := f.start.Add(failWindow).Sub(l.now())
	if left <= 0 {
		delete(l.m, ip)
		return 0
	}
	if f.n < maxFails {
		return 0
	}
	return left
}

func (l *limiter) fail(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f, ok := l.m[ip]
	if !ok || now.Sub(f.start) >= failWindow {
		if len(l.m) >= maxClients {
			clear(l.m)
		}
		f = &failures{start: now}
		l.m[ip] = f
	}
	f.n++
}
