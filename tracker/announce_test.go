package tracker

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/google/go-cmp/cmp"
)

func TestParseAnnounce(t *testing.T) {
	ih := hashOf("image")
	id := peerID(1)
	base := func(extra ...string) string { return query(ih, id, 6881, extra...).Encode() }
	want := func(f func(*Announce)) Announce {
		a := Announce{InfoHash: ih, PeerID: id, Port: 6881, Left: 100, NumWant: -1}
		if f != nil {
			f(&a)
		}
		return a
	}
	for _, tc := range []struct {
		name    string
		raw     string
		want    Announce
		wantErr string // substring; "" means success
	}{
		{name: "minimal", raw: base(), want: want(nil)},
		{name: "counters", raw: base("uploaded", "5", "downloaded", "7", "left", "0"),
			want: want(func(a *Announce) { a.Uploaded, a.Downloaded, a.Left = 5, 7, 0 })},
		{name: "no left", raw: base("left", ""), want: want(func(a *Announce) { a.Left = -1 })},
		{name: "left max is unknown", raw: base("left", "9223372036854775807"), want: want(func(a *Announce) { a.Left = -1 })},
		{name: "no counters", raw: base("uploaded", "", "downloaded", ""), want: want(nil)},
		{name: "started", raw: base("event", "started"), want: want(func(a *Announce) { a.Event = EventStarted })},
		{name: "completed", raw: base("event", "completed"), want: want(func(a *Announce) { a.Event = EventCompleted })},
		{name: "stopped", raw: base("event", "stopped"), want: want(func(a *Announce) { a.Event = EventStopped })},
		{name: "event empty", raw: base("event", "empty"), want: want(nil)},
		{name: "event blank", raw: base() + "&event=", want: want(nil)},
		{name: "numwant", raw: base("numwant", "30"), want: want(func(a *Announce) { a.NumWant = 30 })},
		{name: "numwant zero", raw: base("numwant", "0"), want: want(func(a *Announce) { a.NumWant = 0 })},
		{name: "numwant huge clamped", raw: base("numwant", "99999999999"), want: want(func(a *Announce) { a.NumWant = 1<<31 - 1 })},
		{name: "port max", raw: base("port", "65535"), want: want(func(a *Announce) { a.Port = 65535 })},
		{name: "leading zero is decimal", raw: base("port", "010"), want: want(func(a *Announce) { a.Port = 10 })},
		{name: "unknown keys ignored", raw: base("key", "abc", "supportcrypto", "1", "ip", "10.0.0.1"), want: want(nil)},

		{name: "empty query", raw: "", wantErr: "info_hash is missing"},
		{name: "info_hash short", raw: base("info_hash", strings.Repeat("a", 19)), wantErr: "info_hash is 19 bytes, want 20"},
		{name: "info_hash hex", raw: base("info_hash", strings.Repeat("ab", 20)), wantErr: "info_hash is 40 bytes"},
		{name: "info_hash twice", raw: base() + "&info_hash=" + url.QueryEscape(string(ih[:])), wantErr: "info_hash appears 2 times"},
		{name: "peer_id missing", raw: base("peer_id", ""), wantErr: "peer_id is missing"},
		{name: "peer_id long", raw: base("peer_id", strings.Repeat("p", 21)), wantErr: "peer_id is 21 bytes"},
		{name: "port missing", raw: base("port", ""), wantErr: "port is missing"},
		{name: "port zero", raw: base("port", "0"), wantErr: "not in 1..65535"},
		{name: "port too big", raw: base("port", "65536"), wantErr: "not in 1..65535"},
		{name: "port negative", raw: base("port", "-1"), wantErr: "not in 1..65535"},
		{name: "port hex", raw: base("port", "0x1A"), wantErr: "not in 1..65535"},
		{name: "port blank", raw: base() + "&port=", wantErr: "port appears 2 times"},
		{name: "uploaded negative", raw: base("uploaded", "-5"), wantErr: "uploaded \"-5\" is not a non-negative decimal integer"},
		{name: "downloaded text", raw: base("downloaded", "lots"), wantErr: "downloaded \"lots\""},
		{name: "left plus sign", raw: base("left", "+5"), wantErr: "left \"+5\""},
		{name: "left overflow", raw: base("left", "99999999999999999999"), wantErr: "too large"},
		{name: "left empty", raw: strings.Replace(base(), "left=100", "left=", 1), wantErr: "left \"\""},
		{name: "event bogus", raw: base("event", "paused"), wantErr: "event \"paused\" is unknown"},
		{name: "event case", raw: base("event", "Started"), wantErr: "event \"Started\" is unknown"},
		{name: "numwant negative", raw: base("numwant", "-1"), wantErr: "numwant \"-1\""},
		{name: "long garbage echoed short", raw: base("event", strings.Repeat("x", 1000)), wantErr: "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.raw)
			if err != nil {
				t.Fatalf("url.ParseQuery(%q) = %v", tc.raw, err)
			}
			got, err := ParseAnnounce(q)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrBadAnnounce) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseAnnounce(%q) = %+v, %v, want error wrapping ErrBadAnnounce containing %q", tc.raw, got, err, tc.wantErr)
				}
				if len(err.Error()) > 300 {
					t.Errorf("ParseAnnounce(%q) error is %d bytes long, want a short message", tc.raw, len(err.Error()))
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAnnounce(%q) = %v, want nil error", tc.raw, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseAnnounce(%q) mismatch (-want +got):\n%s", tc.raw, diff)
			}
		})
	}
}

// FuzzParseAnnounce feeds raw query strings to ParseAnnounce and to the
// whole Handler. It asserts: no panic, parsed values are in range, every
// reply is HTTP 200 and a bencoded dict, and only the published hash ever
// has a swarm.
func FuzzParseAnnounce(f *testing.F) {
	pub := hashOf("published")
	id := peerID(7)
	f.Add(query(pub, id, 6881).Encode())
	f.Add(query(pub, id, 6881, "event", "started", "numwant", "5").Encode())
	f.Add(query(pub, id, 6881, "event", "stopped").Encode())
	f.Add(query(pub, id, 6881, "event", "completed", "left", "0").Encode())
	f.Add(query(hashOf("other"), id, 6881).Encode())
	f.Add(query(pub, id, 0).Encode())
	f.Add(query(pub, id, 6881, "left", "-1").Encode())
	f.Add(query(pub, id, 6881, "port", "0x10").Encode())
	f.Add("info_hash=%zz&peer_id=1")
	f.Add("info_hash=abc;peer_id=x")
	f.Add("")
	f.Add("&&&=&=")
	f.Add("info_hash=" + strings.Repeat("%00", 20) + "&peer_id=" + strings.Repeat("%ff", 20) + "&port=1")
	f.Fuzz(func(t *testing.T, raw string) {
		if q, err := url.ParseQuery(raw); err == nil {
			if a, err := ParseAnnounce(q); err == nil {
				if a.Port == 0 || a.Uploaded < 0 || a.Downloaded < 0 || a.Left < -1 || a.NumWant < -1 {
					t.Fatalf("ParseAnnounce(%q) = %+v, out of range", raw, a)
				}
				switch a.Event {
				case EventNone, EventStarted, EventCompleted, EventStopped:
				default:
					t.Fatalf("ParseAnnounce(%q).Event = %q, want a known event", raw, a.Event)
				}
			} else if !errors.Is(err, ErrBadAnnounce) {
				t.Fatalf("ParseAnnounce(%q) = %v, want error wrapping ErrBadAnnounce", raw, err)
			}
		}

		tr, err := New(Config{MaxSwarmPeers: 4}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tr.Publish(pub, "published")
		for _, path := range []string{"/announce", "/scrape"} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.URL.RawQuery = raw
			req.RemoteAddr = "198.18.0.9:40000"
			rec := httptest.NewRecorder()
			tr.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s?%q = HTTP %d %q, want 200", path, raw, rec.Code, rec.Body.Bytes())
			}
			var d map[string]any
			if err := bencode.Unmarshal(rec.Body.Bytes(), &d); err != nil {
				t.Fatalf("GET %s?%q body %q is not a bencoded dict: %v", path, raw, rec.Body.Bytes(), err)
			}
		}
		stats := tr.Stats()
		if len(stats) != 1 || stats[0].Name != "published" {
			t.Fatalf("after GET /announce?%q, Stats() = %+v, want only the published swarm", raw, stats)
		}
		if stats[0].Peers > 1 {
			t.Fatalf("after one announce %q, published swarm has %d peers, want at most 1", raw, stats[0].Peers)
		}
	})
}
