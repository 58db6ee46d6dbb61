package tracker

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
)

// Sentinel errors. Errors returned by this package wrap them with %w, so
// callers can branch with errors.Is.
var (
	// ErrNotPublished: the announce or scrape names an info-hash that is not
	// on the allow-list (see Tracker.Publish).
	ErrNotPublished = errors.New("info-hash not published")
	// ErrBadAnnounce: the announce query is malformed (BEP 3 parameters).
	ErrBadAnnounce = errors.New("bad announce")
	// ErrSwarmFull: the swarm already holds Config.MaxSwarmPeers peers.
	ErrSwarmFull = errors.New("swarm full")
	// ErrHostFull: the announcing address already holds
	// Config.MaxPeersPerHost peers in the swarm.
	ErrHostFull = errors.New("too many peers from one address")
	// ErrBadConfig: New rejected the Config.
	ErrBadConfig = errors.New("bad tracker config")
)

// Announce events as they appear in the query (BEP 3). EventNone is a
// regular interval announce; the literal "empty" is accepted as EventNone.
const (
	EventNone      = ""
	EventStarted   = "started"
	EventCompleted = "completed"
	EventStopped   = "stopped"
)

// Announce is one parsed, validated announce query (BEP 3).
type Announce struct {
	InfoHash, PeerID [20]byte
	// Port the peer listens on, 1..65535.
	Port uint16
	// Uploaded and Downloaded are 0 when absent.
	Uploaded, Downloaded int64
	// Left is -1 when absent or unknown. anacrolix clients send
	// math.MaxInt64 for "unknown"; that is also read as -1.
	Left int64
	// Event is one of EventNone, EventStarted, EventCompleted, EventStopped.
	Event string
	// NumWant is -1 when absent. Values past math.MaxInt32 are clamped.
	NumWant int
}

// maxEcho bounds how much of a client's bad value is quoted back in an
// error, so a garbage query cannot make us log or send megabytes.
const maxEcho = 32

func echo(s string) string {
	if len(s) > maxEcho {
		s = s[:maxEcho] + "…"
	}
	return strconv.Quote(s)
}

// single returns the only value of key, whether it was present, and an
// error if the key was repeated (a repeated announce key is ambiguous).
func single(q url.Values, key string) (string, bool, error) {
	vs, ok := q[key]
	switch {
	case !ok || len(vs) == 0:
		return "", false, nil
	case len(vs) > 1:
		return "", true, fmt.Errorf("%w: %s appears %d times: send it once", ErrBadAnnounce, key, len(vs))
	}
	return vs[0], true, nil
}

func parseHash(q url.Values, key string) ([20]byte, error) {
	var ret [20]byte
	s, ok, err := single(q, key)
	if err != nil {
		return ret, err
	}
	if !ok {
		return ret, fmt.Errorf("%w: %s is missing: send the raw 20 bytes, URL-escaped", ErrBadAnnounce, key)
	}
	if len(s) != len(ret) {
		return ret, fmt.Errorf("%w: %s is %d bytes, want 20: send the raw 20 bytes, URL-escaped (not hex)", ErrBadAnnounce, key, len(s))
	}
	copy(ret[:], s)
	return ret, nil
}

// parseCount parses an optional non-negative decimal integer. Signs,
// spaces, hex and octal are refused: anacrolix's own handler parses with
// base 0, where "010" is 8, so only plain decimal is unambiguous.
func parseCount(q url.Values, key string, bits int) (v uint64, present bool, err error) {
	s, ok, err := single(q, key)
	if err != nil || !ok {
		return 0, false, err
	}
	v, err = strconv.ParseUint(s, 10, bits)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange && isDigits(s) {
			return v, true, fmt.Errorf("%w: %s %s is too large", ErrBadAnnounce, key, echo(s))
		}
		return 0, true, fmt.Errorf("%w: %s %s is not a non-negative decimal integer", ErrBadAnnounce, key, echo(s))
	}
	return v, true, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseAnnounce parses and validates a BEP 3 announce query. Keys it does
// not know (compact, key, supportcrypto, ip, …) are ignored. Errors wrap
// ErrBadAnnounce and say what to send instead.
func ParseAnnounce(q url.Values) (Announce, error) {
	var a Announce
	var err error
	if a.InfoHash, err = parseHash(q, "info_hash"); err != nil {
		return Announce{}, err
	}
	if a.PeerID, err = parseHash(q, "peer_id"); err != nil {
		return Announce{}, err
	}

	ps, ok, err := single(q, "port")
	switch {
	case err != nil:
		return Announce{}, err
	case !ok:
		return Announce{}, fmt.Errorf("%w: port is missing: send the port the peer listens on, 1..65535", ErrBadAnnounce)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return Announce{}, fmt.Errorf("%w: port %s is not in 1..65535: send the port the peer listens on", ErrBadAnnounce, echo(ps))
	}
	a.Port = uint16(port)

	for _, f := range []struct {
		key string
		dst *int64
	}{{"uploaded", &a.Uploaded}, {"downloaded", &a.Downloaded}} {
		v, _, err := parseCount(q, f.key, 63)
		if err != nil {
			return Announce{}, err
		}
		*f.dst = int64(v)
	}

	a.Left = -1
	left, ok, err := parseCount(q, "left", 63)
	if err != nil {
		return Announce{}, err
	}
	if ok && left != math.MaxInt64 {
		a.Left = int64(left)
	}

	ev, _, err := single(q, "event")
	if err != nil {
		return Announce{}, err
	}
	switch ev {
	case EventNone, "empty": // BEP 3: "empty" is the same as not present.
		a.Event = EventNone
	case EventStarted, EventCompleted, EventStopped:
		a.Event = ev
	default:
		return Announce{}, fmt.Errorf("%w: event %s is unknown: send started, completed, stopped or no event", ErrBadAnnounce, echo(ev))
	}

	a.NumWant = -1
	nw, ok, err := parseCount(q, "numwant", 31)
	if err != nil && !(ok && nw == math.MaxInt32) { // too large: clamp
		return Announce{}, err
	}
	if ok {
		a.NumWant = int(nw)
	}
	return a, nil
}

// query renders the announce as the minimal query anacrolix's handler
// reads, in plain decimal, so that it sees exactly what we parsed.
func (a Announce) query() url.Values {
	q := url.Values{}
	q.Set("info_hash", string(a.InfoHash[:]))
	q.Set("peer_id", string(a.PeerID[:]))
	q.Set("port", strconv.FormatUint(uint64(a.Port), 10))
	if a.Left >= 0 {
		q.Set("left", strconv.FormatInt(a.Left, 10))
	}
	if a.Event != EventNone {
		q.Set("event", a.Event)
	}
	return q
}
