package pxe

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// consoleClient talks to a served console as a browser would, without
// following redirects (the tests look at them).
type consoleClient struct {
	t      *testing.T
	base   string
	cookie *http.Cookie
	csrf   string
}

func (c *consoleClient) do(method, path, body string, hdr ...string) (*http.Response, string) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	cl := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([0-9a-f]*)">`)

// login posts the secret and, on success, keeps the cookie and the page's
// CSRF token.
func (c *consoleClient) login(secret string, hdr ...string) *http.Response {
	c.t.Helper()
	form := url.Values{"secret": {secret}, "next": {"/tasks"}}.Encode()
	resp, _ := c.do("POST", "/login", form, append([]string{"Content-Type", "application/x-www-form-urlencoded"}, hdr...)...)
	for _, ck := range resp.Cookies() {
		if ck.Name == "pxeswarm_session" && ck.Value != "" {
			c.cookie = ck
		}
	}
	if resp.StatusCode == http.StatusSeeOther && c.cookie != nil {
		_, page := c.do("GET", "/room", "")
		m := csrfMeta.FindStringSubmatch(page)
		if m == nil || m[1] == "" {
			c.t.Fatalf("room page after login has no CSRF token:\n%s", page)
		}
		c.csrf = m[1]
	}
	return resp
}

// TestConsoleAccess is the console's access control as an attacker on
// the LAN meets it: nothing changes without a session, a session alone
// (a cross-site request carries the cookie) is not enough without the
// CSRF token and a same-site Origin, logins are rate limited, sessions
// end by logout and by expiry.
func TestConsoleAccess(t *testing.T) {
	f := newFixture(t, func(c *HTTPConfig) { c.Console.SessionTTL = 3 * time.Second })
	for _, m := range []Machine{{MAC: macA, Name: "pc-01", Group: "room-101"}, {MAC: macB, Name: "pc-02", Group: "room-101"}} {
		if err := f.store.PutMachine(m); err != nil {
			t.Fatal(err)
		}
	}
	base := serveLocal(t, f.cfg)
	origin := base
	c := &consoleClient{t: t, base: base}
	createA := `{"mac": "` + macA + `", "image": "demo"}`

	// No session: pages send to the login page, changes are refused, the
	// event stream is closed.
	if resp, _ := c.do("GET", "/room", ""); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Errorf("GET /room without a session = %d Location %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := c.do("POST", "/api/tasks", createA, "Origin", origin, "X-CSRF-Token", "0"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /api/tasks without a session = %d %s, want 401", resp.StatusCode, body)
	}
	if resp, _ := c.do("GET", "/api/events", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/events without a session = %d, want 401", resp.StatusCode)
	}
	// A made-up cookie is no session.
	c.cookie = &http.Cookie{Name: "pxeswarm_session", Value: strings.Repeat("ab", 32)}
	if resp, body := c.do("POST", "/api/tasks", createA, "Origin", origin, "X-CSRF-Token", "0"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /api/tasks with a made-up cookie = %d %s, want 401", resp.StatusCode, body)
	}
	c.cookie = nil

	// A login from another site is refused; a wrong secret too.
	if resp := c.login(testToken, "Origin", "http://198.18.9.9:8000"); resp.StatusCode != http.StatusForbidden || c.cookie != nil {
		t.Errorf("cross-site login = %d (cookie %v), want 403 and no cookie", resp.StatusCode, c.cookie)
	}
	if resp := c.login("wrong-token-123456"); resp.StatusCode != http.StatusUnauthorized || c.cookie != nil {
		t.Errorf("login with a wrong token = %d, want 401 and no cookie", resp.StatusCode)
	}
	resp := c.login(testToken, "Origin", origin)
	if resp.StatusCode != http.StatusSeeOther || c.cookie == nil || resp.Header.Get("Location") != "/tasks" {
		t.Fatalf("login = %d Location %q cookie %v, want 303 to /tasks with a cookie", resp.StatusCode, resp.Header.Get("Location"), c.cookie)
	}
	if ck := c.cookie; !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/" {
		t.Errorf("session cookie = %+v, want HttpOnly, SameSite=Strict, Path=/ (not Secure over plain HTTP)", ck)
	}

	// With the cookie: no CSRF token, a wrong one, no Origin, another
	// Origin, or a cross-site fetch are all refused, and nothing changed.
	for _, tc := range []struct {
		name string
		hdr  []string
	}{
		{"no CSRF token", []string{"Origin", origin}},
		{"wrong CSRF token", []string{"Origin", origin, "X-CSRF-Token", strings.Repeat("0", 64)}},
		{"no Origin", []string{"X-CSRF-Token", c.csrf}},
		{"other Origin", []string{"Origin", "http://198.18.9.9:8000", "X-CSRF-Token", c.csrf}},
		{"other port", []string{"Origin", strings.Replace(origin, ":", ":1", 2), "X-CSRF-Token", c.csrf}},
		{"cross-site fetch", []string{"Origin", origin, "X-CSRF-Token", c.csrf, "Sec-Fetch-Site", "cross-site"}},
	} {
		resp, body := c.do("POST", "/api/tasks", createA, tc.hdr...)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /api/tasks with the cookie, %s = %d %s, want 403", tc.name, resp.StatusCode, body)
		}
	}
	if ts, _ := f.store.Tasks(); len(ts) != 0 {
		t.Fatalf("refused requests made %d task(s)", len(ts))
	}
	// Cookie, token and Origin: the change goes through.
	resp, body := c.do("POST", "/api/tasks", createA, "Origin", origin, "X-CSRF-Token", c.csrf, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/tasks from the console = %d %s, want 201", resp.StatusCode, body)
	}
	// The Bearer token works as before, without any cookie.
	if w := f.admin("POST", "/api/tasks", `{"mac": "`+macB+`", "image": "demo"}`); w.Code != http.StatusCreated {
		t.Errorf("POST /api/tasks with the Bearer token = %d %s", w.Code, w.Body)
	}

	// The event stream sends snapshots with the machines.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	req.AddCookie(c.cookie)
	if er, err := http.DefaultClient.Do(req); err != nil {
		t.Errorf("GET /api/events: %v", err)
	} else {
		sc := bufio.NewScanner(er.Body)
		var data string
		for sc.Scan() && data == "" {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				data = d
			}
		}
		er.Body.Close()
		if er.Header.Get("Content-Type") != "text/event-stream" || !strings.Contains(data, `"name":"pc-01"`) || !strings.Contains(data, `"state":"pending"`) {
			t.Errorf("event stream = %s, first data %s; want a snapshot with pc-01's pending task", er.Header.Get("Content-Type"), data)
		}
	}
	cancel()

	// Logout needs the CSRF token too; after it the cookie is worthless.
	form := "Content-Type"
	if resp, _ := c.do("POST", "/logout", "csrf=00", form, "application/x-www-form-urlencoded", "Origin", origin); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logout without the CSRF token = %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.do("POST", "/logout", "csrf="+c.csrf, form, "application/x-www-form-urlencoded", "Origin", origin); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("logout = %d, want 303", resp.StatusCode)
	}
	if resp, body := c.do("POST", "/api/tasks/"+"any/cancel", "", "Origin", origin, "X-CSRF-Token", c.csrf); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("change after logout = %d %s, want 401", resp.StatusCode, body)
	}

	// Sessions expire (SessionTTL 3s here).
	c.cookie = nil
	c.login(testToken)
	if resp, _ := c.do("GET", "/tasks", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /tasks after login = %d, want 200", resp.StatusCode)
	}
	time.Sleep(3100 * time.Millisecond)
	if resp, _ := c.do("GET", "/tasks", ""); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /tasks after the session expired = %d, want 303 to the login page", resp.StatusCode)
	}

	// A post-login redirect stays on this server.
	c.cookie = nil
	resp, _ = c.do("POST", "/login", url.Values{"secret": {testToken}, "next": {"//198.18.9.9/phish"}}.Encode(), form, "application/x-www-form-urlencoded")
	if loc := resp.Header.Get("Location"); loc != "/room" {
		t.Errorf("login with next=//198.18.9.9/phish redirects to %q, want /room", loc)
	}

	// Guessing is rate limited: after 5 failures even the right token
	// waits.
	for range 6 {
		c.login("wrong-token-123456")
	}
	if resp := c.login(testToken); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("login after 6 failures = %d, want 429", resp.StatusCode)
	}

	// The pages say the browser must not frame them nor run foreign
	// script.
	resp, _ = c.do("GET", "/login", "")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("login page CSP = %q", csp)
	}
	if resp, _ := c.do("GET", "/assets/", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /assets/ = %d, want 404 (no listing)", resp.StatusCode)
	}
	if got, _ := f.store.Tasks(); len(got) != 2 || got[0].State != protocol.TaskPending {
		t.Errorf("tasks at the end = %+v, want the two created", got)
	}
}

// TestConsoleOpenRoom: with the room opened to the LAN, the room page and
// its event stream need no login, but they are read-only: the page has
// no CSRF token, and changes still need a session.
func TestConsoleOpenRoom(t *testing.T) {
	f := newFixture(t, func(c *HTTPConfig) { c.Console.OpenRoom = true })
	base := serveLocal(t, f.cfg)
	c := &consoleClient{t: t, base: base}
	resp, page := c.do("GET", "/room", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `<meta name="csrf-token" content="">`) || strings.Contains(page, `data-test="logout"`) {
		t.Errorf("open room page = %d, want 200 with no CSRF token and no logout:\n%s", resp.StatusCode, page)
	}
	if resp, _ := c.do("GET", "/tasks", ""); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /tasks with an open room = %d, want 303 to login: only the room is open", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	er, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	er.Body.Close()
	if er.StatusCode != http.StatusOK {
		t.Errorf("open room event stream = %d, want 200", er.StatusCode)
	}
	if resp, _ := c.do("POST", "/api/tasks", `{"mac": "`+macA+`", "image": "demo"}`, "Origin", base); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /api/tasks with an open room and no session = %d, want 401", resp.StatusCode)
	}
}

// TestConsolePassword: a site password set as a bcrypt hash (htpasswd
// writes $2y$) logs in besides the admin token; a wrong one does not.
func TestConsolePassword(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *HTTPConfig) {
		c.Console.PasswordHash = strings.Replace(string(hash), "$2a$", "$2y$", 1)
	})
	base := serveLocal(t, f.cfg)
	for _, tt := range []struct {
		secret string
		want   int
	}{{"correct horse battery", http.StatusSeeOther}, {"correct horse batterz", http.StatusUnauthorized}, {testToken, http.StatusSeeOther}, {"", http.StatusUnauthorized}} {
		c := &consoleClient{t: t, base: base}
		if resp := c.login(tt.secret); resp.StatusCode != tt.want || (c.cookie != nil) != (tt.want == http.StatusSeeOther) {
			t.Errorf("login with %q = %d (cookie %v), want %d", tt.secret, resp.StatusCode, c.cookie != nil, tt.want)
		}
	}
	// A config whose hash is not bcrypt is refused before serving.
	f.cfg.Console.PasswordHash = "hunter2"
	if _, err := f.cfg.Handler(); err == nil || !strings.Contains(err.Error(), "bcrypt") {
		t.Errorf("HTTPConfig with a plain password as its hash: %v, want an error naming bcrypt", err)
	}
}
