package pxe

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/atomicfile"
)

// Files of the HTTPS certificate made on first start, in the state dir.
const (
	TLSCertFile = "https-cert.pem"
	TLSKeyFile  = "https-key.pem"
)

// TLSConfig says where the admin API's HTTPS certificate comes from.
type TLSConfig struct {
	// CertFile and KeyFile are the site's own certificate (PEM, the chain
	// first to last) and its key. Both or neither.
	CertFile, KeyFile string
	// StateDir keeps a self-signed certificate made on first start
	// (TLSCertFile, TLSKeyFile with mode 0600) when CertFile is empty.
	StateDir string
	// Hosts are the names and addresses the made certificate is for
	// (subject alternative names). A kept certificate that does not
	// cover them all is replaced. Clients that pin the fingerprint do not
	// need them; clients that check names (curl --cacert) do.
	Hosts []string
}

// Fingerprint is the SHA-256 of a certificate's DER bytes, upper-case hex
// bytes joined by colons: what `openssl x509 -noout -fingerprint -sha256`
// prints, and what clients pin (pxeswarm's --fingerprint).
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return colonHex(sum[:])
}

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	var out strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			out.WriteByte(':')
		}
		out.WriteString(h[i : i+2])
	}
	return out.String()
}

// NormFingerprint reads a fingerprint written with or without colons,
// in either case, optionally after "sha256 Fingerprint=" (openssl's
// output), into Fingerprint's form; "" if it is not 32 hex bytes.
func NormFingerprint(s string) string {
	s = strings.TrimSpace(s)
	if _, after, ok := strings.Cut(s, "="); ok {
		s = after
	}
	s = strings.NewReplacer(":", "", " ", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return ""
	}
	return colonHex(b)
}

// Load returns the HTTPS certificate and its leaf's fingerprint: the
// site's own, or the one kept in StateDir, or (first start, or the kept
// one expired, damaged or not for Hosts) a new self-signed ECDSA P-256
// certificate valid for ten years, saved there.
func (c TLSConfig) Load(log *slog.Logger) (tls.Certificate, string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return tls.Certificate{}, "", fmt.Errorf("%w: http.tls_cert %s / tls_key %s: %w: give a PEM certificate and its key, or leave both out to use a self-signed one", ErrBadConfig, c.CertFile, c.KeyFile, err)
		}
		return cert, Fingerprint(cert.Certificate[0]), nil
	}
	certPath, keyPath := filepath.Join(c.StateDir, TLSCertFile), filepath.Join(c.StateDir, TLSKeyFile)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case err == nil:
		why := c.unfit(cert)
		if why == "" {
			return cert, Fingerprint(cert.Certificate[0]), nil
		}
		log.Warn("https: the kept certificate "+why+"; making a new one (its fingerprint changes)", "cert", certPath)
	case errors.Is(err, os.ErrNotExist):
	default:
		log.Warn("https: the kept certificate is damaged; making a new one (its fingerprint changes)", "cert", certPath, "err", err)
	}
	certPEM, keyPEM, err := selfSigned(c.Hosts, time.Now())
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("https: make a certificate: %w", err)
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("state folder %s: %w", c.StateDir, err)
	}
	// The key first: a crash between the two leaves a key without its
	// certificate, which the next start replaces.
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("https: save the key: %w", err)
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("https: save the certificate: %w", err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	fp := Fingerprint(cert.Certificate[0])
	log.Info("https: made a self-signed certificate", "cert", certPath, "fingerprint", fp, "hosts", strings.Join(c.Hosts, ","))
	return cert, fp, nil
}

// unfit says why a kept certificate cannot be used, or "".
func (c TLSConfig) unfit(cert tls.Certificate) string {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "does not parse"
	}
	if time.Now().Add(24 * time.Hour).After(leaf.NotAfter) {
		return "expires " + leaf.NotAfter.Format(time.DateOnly)
	}
	for _, h := range c.Hosts {
		if leaf.VerifyHostname(h) != nil {
			return "is not for " + h
		}
	}
	return ""
}

// selfSigned makes a self-signed certificate for hosts. It is its own CA
// (basic constraints, cert-sign usage), so `curl --cacert` and Go's
// x509 accept it as a trust anchor.
func selfSigned(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pxeswarm serve", Organization: []string{"pxeswarm"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	var c, k bytes.Buffer
	pem.Encode(&c, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&k, &pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return c.Bytes(), k.Bytes(), nil
}

// PinnedTLS is a client TLS config that trusts exactly the certificate
// whose leaf has fingerprint fp (Fingerprint's form, or anything
// NormFingerprint reads), whatever names it carries: for a self-signed
// server certificate whose fingerprint `pxeswarm serve` printed.
func PinnedTLS(fp string) (*tls.Config, error) {
	want := NormFingerprint(fp)
	if want == "" {
		return nil, fmt.Errorf("fingerprint %q: want the 32-byte SHA-256 that pxeswarm serve printed (AB:CD:…)", fp)
	}
	return &tls.Config{
		// The names are not checked: the pin is the whole trust.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("https: the server sent no certificate")
			}
			if got := Fingerprint(cs.PeerCertificates[0].Raw); got != want {
				return fmt.Errorf("https: the server's certificate has fingerprint %s, not the pinned %s: another server answers at this address, or its certificate was replaced", got, want)
			}
			return nil
		},
	}, nil
}
