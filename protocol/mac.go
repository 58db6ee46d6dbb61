package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadMAC: not a MAC address in aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff form.
var ErrBadMAC = errors.New("bad MAC address")

// ParseMAC normalises a MAC address to lower-case aa:bb:cc:dd:ee:ff. It
// accepts colons or hyphens (iPXE's ${mac:hexhyp}, Windows style) and
// either case, and nothing else: six bytes, two hex digits each, one kind
// of separator.
func ParseMAC(s string) (string, error) {
	if len(s) != 17 {
		return "", fmt.Errorf("%w %q: want six hex bytes such as 52:54:00:12:34:56", ErrBadMAC, Clip(s, 40))
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return "", fmt.Errorf("%w %q: separate the bytes with : or -", ErrBadMAC, s)
	}
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if i%3 == 2 {
			if c != sep {
				return "", fmt.Errorf("%w %q: separate the bytes with : or -, the same throughout", ErrBadMAC, s)
			}
			b[i] = ':'
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("%w %q: %q is not a hex digit", ErrBadMAC, s, rune(s[i]))
		}
	}
	return string(b), nil
}

// Clip shortens s for an error message: it may come from the network.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
