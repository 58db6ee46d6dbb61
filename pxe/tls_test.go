package pxe

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testnet"
)

// opensslFingerprint is what openssl says the certificate's SHA-256
// fingerprint is.
func opensslFingerprint(t *testing.T, certFile string) string {
	t.Helper()
	out, err := exec.Command("openssl", "x509", "-in", certFile, "-noout", "-fingerprint", "-sha256").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509 -fingerprint: %v\n%s", err, out)
	}
	fp := NormFingerprint(string(out))
	if fp == "" {
		t.Fatalf("openssl printed %q, not a fingerprint", out)
	}
	return fp
}

// TestTLSConfigLoad: the first load makes a self-signed P-256
// certificate, its key 0600; later loads reuse it (same fingerprint, as
// openssl computes it); a kept certificate not for the server's names is
// replaced; the site's own certificate is used as it is, and nothing is
// made.
func TestTLSConfigLoad(t *testing.T) {
	needs.Tool(t, "openssl")
	state := t.TempDir()
	c := TLSConfig{StateDir: state, Hosts: []string{"localhost", "127.0.0.1", "198.18.0.1"}}
	cert, fp, err := c.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(state, TLSCertFile), filepath.Join(state, TLSKeyFile)
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, st)
	}
	if got := opensslFingerprint(t, certFile); got != fp {
		t.Errorf("Load fingerprint %s, openssl says %s", fp, got)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA || leaf.VerifyHostname("198.18.0.1") != nil || leaf.VerifyHostname("localhost") != nil {
		t.Errorf("certificate: key %v, names %v %v; want ECDSA for 198.18.0.1 and localhost", leaf.PublicKeyAlgorithm, leaf.DNSNames, leaf.IPAddresses)
	}
	_, fp2, err := c.Load(nil)
	if err != nil || fp2 != fp {
		t.Errorf("second Load = %s, %v; want the same certificate %s", fp2, err, fp)
	}
	// The server moved to another address: a new certificate for it.
	c.Hosts = append(c.Hosts, "198.18.0.2")
	_, fp3, err := c.Load(nil)
	if err != nil || fp3 == fp || opensslFingerprint(t, certFile) != fp3 {
		t.Errorf("Load for a new address = %s, %v; want a new certificate (old %s), saved", fp3, err, fp)
	}

	// The site's own certificate, made by openssl.
	own := t.TempDir()
	ownCert, ownKey := filepath.Join(own, "site.pem"), filepath.Join(own, "site.key")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-subj", "/CN=pxeswarm.school.example", "-days", "2", "-keyout", ownKey, "-out", ownCert).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	state2 := t.TempDir()
	_, fp4, err := TLSConfig{CertFile: ownCert, KeyFile: ownKey, StateDir: state2, Hosts: c.Hosts}.Load(nil)
	if err != nil || fp4 != opensslFingerprint(t, ownCert) {
		t.Errorf("Load(site's own) = %s, %v; want its fingerprint %s", fp4, err, opensslFingerprint(t, ownCert))
	}
	if _, err := os.Stat(filepath.Join(state2, TLSCertFile)); !os.IsNotExist(err) {
		t.Errorf("with the site's own certificate, Load made one in the state dir (%v)", err)
	}
	if _, _, err := (TLSConfig{CertFile: ownCert, KeyFile: certFile}).Load(nil); err == nil || !strings.Contains(err.Error(), "tls_key") {
		t.Errorf("Load(certificate with another key) = %v, want an error naming tls_key", err)
	}
}

func TestNormFingerprint(t *testing.T) {
	const want = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF"
	for _, in := range []string{want, strings.ToLower(want), strings.ReplaceAll(want, ":", ""), "sha256 Fingerprint=" + want + "\n"} {
		if got := NormFingerprint(in); got != want {
			t.Errorf("NormFingerprint(%q) = %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{"", "01:23", want + ":00", "zz" + want[2:]} {
		if got := NormFingerprint(in); got != "" {
			t.Errorf("NormFingerprint(%q) = %q, want \"\"", in, got)
		}
	}
}

var fingerprintLog = regexp.MustCompile(`https_fingerprint=([0-9A-F:]{95})`)

// TestServeHTTPS: with http.https_listen the admin API answers over TLS
// to a client that pins the fingerprint serve logged (and to curl with
// the saved certificate as its CA), refuses the token over plain HTTP
// with a 403 naming the HTTPS URL, and the terminals' routes stay on
// plain HTTP. A restart keeps the certificate.
func TestServeHTTPS(t *testing.T) {
	needs.Tool(t, "curl")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	s := loopbackSite(t, state, 1<<20)
	s.HTTP.HTTPSListen = net.JoinHostPort("127.0.0.1", strconv.Itoa(testnet.FreePort(t)))
	logs, stop := startSite(t, s)
	m := fingerprintLog.FindStringSubmatch(logs.String())
	if m == nil {
		stop()
		t.Fatalf("serve logged no https_fingerprint")
	}
	fp := m[1]
	httpsURL := "https://" + s.HTTP.HTTPSListen
	if !strings.Contains(logs.String(), "admin_url="+httpsURL) {
		t.Errorf("the ready line does not name the admin URL %s", httpsURL)
	}
	tokenBytes, _ := os.ReadFile(filepath.Join(state, "admin-token"))
	token := strings.TrimSpace(string(tokenBytes))
	body := `{"mac": "52:54:00:aa:00:07", "image": "lab"}`

	do := func(c *http.Client, base, method, path, body string) (int, string, error) {
		req, _ := http.NewRequestWithContext(context.Background(), method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	// The token over plain HTTP: refused, nothing made.
	code, msg, err := do(plain, s.PublicURL, "POST", "/api/tasks", body)
	if err != nil || code != http.StatusForbidden || !strings.Contains(msg, httpsURL+"/api/tasks") {
		t.Errorf("POST /api/tasks over plain HTTP = %d %q, %v; want 403 naming %s/api/tasks", code, msg, err, httpsURL)
	}
	// The terminals' and the read API's routes still answer on plain HTTP.
	if code, _, err := do(plain, s.PublicURL, "GET", "/api/status", ""); err != nil || code != 200 {
		t.Errorf("GET /api/status over plain HTTP = %d, %v; want 200", code, err)
	}
	if code, _, err := do(plain, s.PublicURL, "GET", "/boot/vmlinuz", ""); err != nil || code != 200 {
		t.Errorf("GET /boot/vmlinuz over plain HTTP = %d, %v; want 200", code, err)
	}

	// A client pinned to the logged fingerprint creates the task.
	pinned, err := PinnedTLS(fp)
	if err != nil {
		t.Fatal(err)
	}
	tc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: pinned}}
	code, msg, err = do(tc, httpsURL, "POST", "/api/tasks", body)
	var ct CreatedTasks
	if err != nil || code != http.StatusCreated || json.Unmarshal([]byte(msg), &ct) != nil || len(ct.Tasks) != 1 {
		t.Fatalf("POST /api/tasks over HTTPS, pinned = %d %q, %v; want 201 with one task", code, msg, err)
	}
	// The console lives on HTTPS: a page over plain HTTP redirects there
	// (with or without a session cookie), and a login over TLS sets a
	// Secure __Host- cookie that opens the pages over TLS.
	noRedirect := func(c *http.Client) *http.Client {
		c2 := *c
		c2.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return &c2
	}
	if resp, err := noRedirect(plain).Get(s.PublicURL + "/room"); err != nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != httpsURL+"/room" {
		t.Errorf("GET /room over plain HTTP = %v %v, want 303 to %s/room", resp, err, httpsURL)
	} else {
		resp.Body.Close()
	}
	resp, err := noRedirect(tc).PostForm(httpsURL+"/login", url.Values{"secret": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		sess = c
	}
	if resp.StatusCode != http.StatusSeeOther || sess == nil || sess.Name != "__Host-pxeswarm_session" || !sess.Secure || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode {
		t.Errorf("console login over HTTPS = %d, cookie %+v; want 303 and a Secure HttpOnly SameSite=Strict __Host- cookie", resp.StatusCode, sess)
	} else {
		for _, tr := range []struct {
			c    *http.Client
			base string
			name string
			want int
		}{{tc, httpsURL, sess.Name, http.StatusOK}, {plain, s.PublicURL, "pxeswarm_session", http.StatusSeeOther}} {
			req, _ := http.NewRequest("GET", tr.base+"/tasks", nil)
			req.AddCookie(&http.Cookie{Name: tr.name, Value: sess.Value})
			resp, err := noRedirect(tr.c).Do(req)
			if err != nil || resp.StatusCode != tr.want {
				t.Errorf("GET %s/tasks with the HTTPS session as %s = %v %v, want %d", tr.base, tr.name, resp, err, tr.want)
			} else {
				resp.Body.Close()
			}
		}
	}
	// Another pin: the handshake fails, the token is never sent.
	otherPin, _ := PinnedTLS(strings.Repeat("00:", 31) + "00")
	oc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: otherPin}}
	if _, _, err := do(oc, httpsURL, "GET", "/api/status", ""); err == nil || !strings.Contains(err.Error(), fp) {
		t.Errorf("request pinned to another fingerprint = %v, want a TLS error naming the server's %s", err, fp)
	}
	// curl with the saved certificate as its CA: the admin API over TLS
	// from a real client that checks the name.
	out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", filepath.Join(state, TLSCertFile),
		"-X", "POST", "-H", "Authorization: Bearer "+token, "-w", "\n%{http_code}",
		httpsURL+"/api/tasks/"+ct.Tasks[0].ID+"/cancel").CombinedOutput()
	if err != nil || !bytes.HasSuffix(bytes.TrimSpace(out), []byte("\n200")) || !strings.Contains(string(out), `"canceled"`) {
		t.Errorf("curl --cacert POST cancel: %v\n%s\nwant 200 and the task canceled", err, out)
	}
	// A TLS client that trusts only the system roots refuses the
	// self-signed certificate.
	if _, _, err := do(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}, httpsURL, "GET", "/api/status", ""); err == nil {
		t.Error("a client without the pin or the certificate accepted the HTTPS server")
	}
	stop()

	// Restart: the same certificate.
	logs2, stop2 := startSite(t, s)
	defer stop2()
	if m2 := fingerprintLog.FindStringSubmatch(logs2.String()); m2 == nil || m2[1] != fp {
		t.Errorf("after a restart the fingerprint is %v, want the first start's %s", m2, fp)
	}
	if strings.Contains(logs2.String(), "made a self-signed certificate") {
		t.Error("the restart made a new certificate")
	}
}
