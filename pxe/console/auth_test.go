package console

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSafeNext(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/tasks", "/tasks"},
		{"/machine/52:54:00:12:00:01?x=1", "/machine/52:54:00:12:00:01?x=1"},
		{"", "/room"},
		{"tasks", "/room"},
		{"https://198.18.9.9/", "/room"},
		{"//198.18.9.9/phish", "/room"},
		{"/\\198.18.9.9/phish", "/room"},
		{"/\t/198.18.9.9/phish", "/room"},
		{"/\n/198.18.9.9", "/room"},
		{"/ /198.18.9.9", "/room"},
		{"/a\\b", "/room"},
		{"/caf\u00e9", "/room"},
	} {
		if got := safeNext(tt.in); got != tt.want {
			t.Errorf("safeNext(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestLimiter: five failures within a minute block the address for the
// rest of the minute; another address is not blocked; the block ends.
func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter()
	l.now = func() time.Time { return now }
	for i := range maxFails {
		if w := l.blocked("198.18.0.5"); w != 0 {
			t.Fatalf("blocked after %d failures = %v, want 0", i, w)
		}
		l.fail("198.18.0.5")
	}
	if w := l.blocked("198.18.0.5"); w != failWindow {
		t.Errorf("blocked after %d failures = %v, want %v", maxFails, w, failWindow)
	}
	if w := l.blocked("198.18.0.6"); w != 0 {
		t.Errorf("another address blocked %v, want 0", w)
	}
	now = now.Add(failWindow)
	if w := l.blocked("198.18.0.5"); w != 0 {
		t.Errorf("blocked a window later = %v, want 0", w)
	}
}

// TestSessionsExpireAndBound: a session ends at its TTL, and the table
// keeps at most maxSessions, dropping the oldest.
func TestSessionsExpireAndBound(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSessions(time.Hour)
	s.now = func() time.Time { now = now.Add(time.Millisecond); return now }
	var first string
	for i := range maxSessions + 10 {
		id, _ := s.add(false)
		if i == 0 {
			first = id
		}
	}
	if len(s.m) != maxSessions {
		t.Errorf("sessions kept = %d, want %d", len(s.m), maxSessions)
	}
	if _, ok := s.lookup(first, false); ok {
		t.Error("the oldest session survived past the bound")
	}
	id, _ := s.add(false)
	if _, ok := s.lookup(id, false); !ok {
		t.Fatal("a new session is not found")
	}
	if _, ok := s.lookup(id, true); ok {
		t.Error("a plain-HTTP session is valid over TLS")
	}
	now = now.Add(time.Hour)
	if _, ok := s.lookup(id, false); ok {
		t.Error("a session is valid past its TTL")
	}
}

// FuzzSafeNext: whatever a login form's next says, the redirect stays a
// local path a browser cannot read as another host.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/tasks", "//x", "/\\x", "/\t/x", "https://x/", "/room?next=//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		if got != "/room" && got != next {
			t.Fatalf("safeNext(%q) = %q: neither the input nor /room", next, got)
		}
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.Contains(got, `\`) {
			t.Fatalf("safeNext(%q) = %q: not a local path", next, got)
		}
		for _, c := range got {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("safeNext(%q) = %q: has %q, which browsers drop or read differently", next, got, c)
			}
		}
		if u, err := url.Parse(got); err == nil && (u.Host != "" || u.Scheme != "") {
			t.Fatalf("safeNext(%q) = %q parses with host %q scheme %q", next, got, u.Host, u.Scheme)
		}
	})
}
