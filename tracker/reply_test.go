package tracker

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/bencode"
)

// TestSuccessReplyHasNoFailureKey: a successful announce must not carry a
// "failure reason" key at all, even empty; Transmission treats its
// presence as an error and never asks for peers (seen with 3.00).
func TestSuccessReplyHasNoFailureKey(t *testing.T) {
	tr, err := New(TestingConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ih [20]byte
	copy(ih[:], "01234567890123456789")
	tr.Publish(ih, "img")
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	// The query Transmission 3.00 sends.
	q := "info_hash=" + url.QueryEscape(string(ih[:])) + "&peer_id=-TR3000-e2ltu31423le&port=51500&uploaded=0&downloaded=0&left=41943040&numwant=80&key=5e089716&compact=1&supportcrypto=1&event=started"
	resp, err := http.Get(srv.URL + "/announce?" + q)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m map[string]bencode.Bytes
	if err := bencode.Unmarshal(body, &m); err != nil {
		t.Fatalf("reply %q is not a bencoded dict: %v", body, err)
	}
	for _, k := range []string{"failure reason", "warning message"} {
		if _, ok := m[k]; ok {
			t.Errorf("success reply %q has a %q key", body, k)
		}
	}
	if _, ok := m["interval"]; !ok || !strings.Contains(string(body), "peers") {
		t.Errorf("reply %q lacks interval or peers", body)
	}
}
