package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// Actions a plan can carry: what the machine does with it.
const (
	// ActionDeploy writes an image from the swarm to the target, reads
	// it back, seeds it for a while, then does After.
	ActionDeploy = "deploy"
)

// What the agent does after an error (Plan.OnError). None of them boots
// the machine: its disk may be half-written.
const (
	// OnErrorHalt shows the error and a message on the console and waits
	// there, with no shell, until someone resets the machine.
	OnErrorHalt = "halt"
	// OnErrorRetry shows the error, waits a bounded back-off and starts
	// over (network, plan, disk) until it succeeds.
	OnErrorRetry = "retry"
	// OnErrorShell stops at a root shell on the console: for an admin
	// debugging a machine, never for a room of students.
	OnErrorShell = "shell"
)

// ValidOnError reports whether s is one of the OnError values.
func ValidOnError(s string) bool {
	return s == OnErrorHalt || s == OnErrorRetry || s == OnErrorShell
}

// A Plan tells one machine what to do. The server signs it with its
// ed25519 key; the agent verifies it with the public key built into its
// initramfs and never writes a disk on a plan that does not verify.
type Plan struct {
	MAC    string `json:"mac"`     // the machine, lower-case aa:bb:cc:dd:ee:ff
	TaskID string `json:"task_id"` // the task this plan belongs to
	// Action is what the machine does: [ActionDeploy] or
	// [ActionCapture]. An agent refuses an action it does not know, and
	// the signature covers it like every other field.
	Action string `json:"action"`
	// Image is the image name: the one to write, or for a capture the
	// name to publish the disk as (the server may make it NAME-v2).
	Image   string `json:"image"`
	Torrent string `json:"torrent,omitempty"` // URL of the image torrent (deploy)
	// InfoHash pins the torrent: the agent refuses a torrent whose
	// info-hash differs, so the plan signs the bytes, not only the URL.
	InfoHash string   `json:"info_hash,omitempty"`
	Trackers []string `json:"trackers,omitempty"` // announce URLs; empty: the torrent's
	// Seeders are host:port peer addresses of the image host's seeder for
	// this image, dialled at once besides the trackers: a machine whose
	// first announce fails (a busy or restarting server) would otherwise
	// wait a minute for the next (anacrolix's backoff) with no peer.
	Seeders []string `json:"seeders,omitempty"`
	Target  Target   `json:"target"`
	// CreateTable makes the partition table from the image's layout
	// before writing (a blank or replaced disk).
	CreateTable bool   `json:"create_table"`
	CheckMode   string `json:"check"`    // "fresh" or "verify"
	SeedFor     string `json:"seed_for"` // Go duration to keep seeding after completion
	After       string `json:"after"`    // "reboot", "poweroff" or "shell"
	// Discard asks the agent to discard the free space of used-block
	// parts (the gaps between the extents, free by the image's bitmaps)
	// where the disk can: TRIM on an SSD, a punched hole in a file. A
	// disk that cannot gets one log line. Zero gaps are zeroed whether or
	// not it is set. Left out when false, so plans without it still
	// decode on agents that predate it.
	Discard bool `json:"discard,omitempty"`
	// OnError is what the agent does after an error once it holds this
	// plan: [OnErrorHalt], [OnErrorRetry] or [OnErrorShell]. Signed like
	// every other field, so nothing on the LAN can turn a failed machine
	// into a root shell.
	OnError string    `json:"on_error"`
	Issued  time.Time `json:"issued"`
	// Nonce is the agent's fresh random value from its plan request
	// (GET /plan/{mac}?nonce=…), signed into the plan: a plan recorded
	// earlier and replayed by a rogue server carries another nonce, and
	// Verify refuses it ([ErrReplay]).
	Nonce string `json:"nonce"`
	// ReportToken is the task's secret. The agent sends it with every
	// report (Authorization: Bearer …); the server takes no report on the
	// task without it, so a LAN host that knows only the MAC and the task
	// ID cannot move the task.
	ReportToken string `json:"report_token"`
	// CaptureID names the server's capture a capture plan uploads to
	// (/api/captures/{id}/…); the upload secret is ReportToken. Only with
	// [ActionCapture].
	CaptureID string `json:"capture_id,omitempty"`
	// Raw: a capture sends every byte of every partition and reads no
	// used maps (a BitLocker volume, a filesystem to keep bit for bit).
	Raw bool `json:"raw,omitempty"`
}

// MaxSeeders bounds Plan.Seeders.
const MaxSeeders = 8

// NonceParam is the plan request's query parameter that carries the
// agent's nonce.
const NonceParam = "nonce"

// NewNonce returns a fresh nonce for a plan request: 16 random bytes in
// hex.
func NewNonce() (string, error) { return randomHex(16) }

// NewReportToken returns a fresh task secret: 24 random bytes in hex.
func NewReportToken() (string, error) { return randomHex(24) }

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("no randomness for a nonce or token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// IsHex reports whether s is min to max lower-case hex digits, as nonces
// and report tokens are.
func IsHex(s string, min, max int) bool {
	return len(s) >= min && len(s) <= max && strings.Trim(s, "0123456789abcdef") == ""
}

// Sentinel errors for plan checks.
var (
	ErrBadPlan      = errors.New("bad plan")
	ErrBadSignature = errors.New("plan signature does not verify")
	// ErrReplay: a validly signed plan that answers another request (its
	// nonce is not the agent's): recorded earlier and sent again.
	ErrReplay = errors.New("plan replayed")
)

// Check validates the plan's fields; errors wrap ErrBadPlan and say what
// to fix on the server.
func (p *Plan) Check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadPlan, fmt.Sprintf(format, args...))
	}
	if mac, err := ParseMAC(p.MAC); err != nil || mac != p.MAC {
		return bad("mac %q: want lower-case six hex bytes such as 52:54:00:12:34:56", p.MAC)
	}
	switch p.Action {
	case ActionDeploy:
		if err := p.checkDeploy(); err != nil {
			return bad("%v", err)
		}
	case ActionCapture:
		if !ValidImageName(p.Image) {
			return bad("image %q: a capture needs the name to publish the disk as (letters, digits, '.', '_', '-')", Clip(p.Image, 60))
		}
		if !ValidCaptureID(p.CaptureID) {
			return bad("capture_id %q: want c- and 16 hex digits, as the server's capture has", Clip(p.CaptureID, 40))
		}
		if p.Torrent != "" || p.InfoHash != "" || len(p.Seeders) > 0 || p.CreateTable || p.Discard {
			return bad("a capture plan names no torrent, info-hash or seeders and sets neither create_table nor discard: the golden disk is only read")
		}
	default:
		return bad("action %q: this agent knows %q and %q; rebuild the initramfs from the server's version", Clip(p.Action, 40), ActionDeploy, ActionCapture)
	}
	if err := p.Target.Check(); err != nil {
		return bad("%v", err)
	}
	if !IsHex(p.Nonce, 32, 128) {
		return bad("nonce %q: want the agent's 32-128 hex digits: the agent asks with ?%s=", Clip(p.Nonce, 40), NonceParam)
	}
	if !IsHex(p.ReportToken, 32, 128) {
		return bad("report_token: want 32-128 hex digits")
	}
	switch p.CheckMode {
	case "fresh", "verify":
	case "":
		if p.Action == ActionDeploy {
			return bad("check %q: want fresh or verify", p.CheckMode)
		}
	default:
		return bad("check %q: want fresh or verify", p.CheckMode)
	}
	if p.SeedFor != "" {
		if d, err := time.ParseDuration(p.SeedFor); err != nil || d < 0 {
			return bad("seed_for %q: want a Go duration such as 10m", p.SeedFor)
		}
	}
	switch p.After {
	case "reboot", "poweroff", "shell":
	default:
		return bad("after %q: want reboot, poweroff or shell", p.After)
	}
	if !ValidOnError(p.OnError) {
		return bad("on_error %q: want halt, retry or shell", Clip(p.OnError, 40))
	}
	return nil
}

// checkDeploy holds the fields only a deploy plan needs.
func (p *Plan) checkDeploy() error {
	if p.Image == "" || p.Torrent == "" {
		return errors.New("no image or torrent URL: assign an image to the task")
	}
	if len(p.InfoHash) != 40 || strings.Trim(strings.ToLower(p.InfoHash), "0123456789abcdef") != "" {
		return fmt.Errorf("info_hash %q: want 40 hex digits", Clip(p.InfoHash, 60))
	}
	if len(p.Seeders) > MaxSeeders {
		return fmt.Errorf("%d seeders: want at most %d", len(p.Seeders), MaxSeeders)
	}
	for _, a := range p.Seeders {
		if ap, err := netip.ParseAddrPort(a); err != nil || !ap.Addr().IsValid() || ap.Port() == 0 {
			return fmt.Errorf("seeder %q: want an IP address and port such as 198.18.0.1:6881", Clip(a, 60))
		}
	}
	if p.CaptureID != "" || p.Raw {
		return errors.New("a deploy plan carries no capture_id or raw")
	}
	return nil
}

// SignedPlan is what the server sends: the plan's exact JSON bytes and an
// ed25519 signature over them. Verifying the bytes as sent, rather than a
// re-encoding, means no canonical JSON form is needed.
type SignedPlan struct {
	Plan      json.RawMessage `json:"plan"`
	Signature string          `json:"signature"` // base64 (standard, padded)
}

// Sign encodes and signs a checked plan.
func Sign(p *Plan, key ed25519.PrivateKey) ([]byte, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return json.Marshal(SignedPlan{Plan: body, Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, body))})
}

// MaxPlanBytes bounds what Verify reads.
const MaxPlanBytes = 64 << 10

// Verify checks a signed plan against the server's public key and returns
// the plan. Anything else (bad JSON, a missing or wrong signature, a plan
// for another machine, bad fields, a nonce other than the agent's) is an
// error: the agent must not touch a disk. An empty mac or nonce skips that
// comparison (for tools that read plans, never for the agent).
func Verify(data []byte, pub ed25519.PublicKey, mac, nonce string) (*Plan, error) {
	if len(data) > MaxPlanBytes {
		return nil, fmt.Errorf("%w: %d bytes is more than a plan can be", ErrBadPlan, len(data))
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: no server public key built in: rebuild the initramfs with the server's key", ErrBadSignature)
	}
	var sp SignedPlan
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sp); err != nil {
		return nil, fmt.Errorf("%w: not a signed plan (%v): is the server URL right?", ErrBadPlan, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: bytes after the signed plan: something on the way changed the reply; check the server URL and any proxy", ErrBadPlan)
	}
	sig, err := base64.StdEncoding.DecodeString(sp.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: the plan is unsigned or its signature is malformed", ErrBadSignature)
	}
	if !ed25519.Verify(pub, sp.Plan, sig) {
		return nil, fmt.Errorf("%w: signed by another key or changed on the way: check that this initramfs was built for this server (pxeswarm build initramfs) and that nothing rewrites HTTP in between", ErrBadSignature)
	}
	var p Plan
	dec = json.NewDecoder(bytes.NewReader(sp.Plan))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: signed plan does not decode (%v): server and agent versions differ?", ErrBadPlan, err)
	}
	if err := p.Check(); err != nil {
		return nil, err
	}
	if mac != "" && p.MAC != strings.ToLower(mac) {
		return nil, fmt.Errorf("%w: plan is for %s, this machine is %s", ErrBadPlan, p.MAC, mac)
	}
	if nonce != "" && p.Nonce != nonce {
		return nil, fmt.Errorf("%w: the signed plan answers another request (nonce %s, this agent asked with %s): it was recorded and sent again, by a second DHCP or HTTP server on this network or something in between",
			ErrReplay, Clip(p.Nonce, 16), Clip(nonce, 16))
	}
	return &p, nil
}

// ParsePublicKey reads a public key as written to plan-key.pub.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a pxeswarm public plan key (base64 of %d bytes): use the server's plan-key.pub", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}
