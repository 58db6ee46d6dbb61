package tracker

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/anacrolix/torrent/bencode"
)

// TestSuccessReplyHasNoFailureKey: a successful announce must not carry a
// "failure reason" key at all, even empty; Transmission treats its
// presence as an error and never asks for peers (seen with 3.00).
func TestSuccessReplyHasNoFailureKey(t *testing.T) {
	tr, _ := newTestTracker(t, testingConfig(t))
	ih := hashOf("img")
	tr.Publish(ih, "img")
	// The extra keys Transmission 3.00 sends.
	q := query(ih, peerID(1), 51500, "numwant", "80", "key", "5e089716", "supportcrypto", "1", "event", "started")
	req := httptest.NewRequest(http.MethodGet, "/announce?"+q.Encode(), nil)
	req.RemoteAddr = "198.18.1.1:40000"
	rec := httptest.NewRecorder()
	tr.Handler().ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	var m map[string]bencode.Bytes
	if err := bencode.Unmarshal(body, &m); err != nil {
		t.Fatalf("reply %q is not a bencoded dict: %v", body, err)
	}
	for _, k := range []string{"failure reason", "warning message"} {
		if _, ok := m[k]; ok {
			t.Errorf("success reply %q has a %q key", body, k)
		}
	}
	for _, k := range []string{"interval", "peers"} {
		if _, ok := m[k]; !ok {
			t.Errorf("reply %q lacks %q", body, k)
		}
	}
}
