package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func testPlan() *Plan {
	return &Plan{
		MAC: "52:54:00:12:34:56", TaskID: "t1", Action: ActionDeploy, Image: "win11",
		Torrent: "http://198.18.0.1:8080/images/win11.torrent", InfoHash: strings.Repeat("ab", 20),
		Seeders: []string{"198.18.0.1:6881"}, Target: Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", SeedFor: "10m", After: "reboot",
		OnError: OnErrorHalt,
		Issued:  time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC),
		Nonce:   testNonce, ReportToken: strings.Repeat("5e", 24),
	}
}

const testNonce = "00112233445566778899aabbccddeeff"

func TestSignVerify(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	data, err := Sign(testPlan(), key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Verify(data, pub, "52:54:00:12:34:56", testNonce)
	if err != nil {
		t.Fatalf("Verify(signed plan) = %v", err)
	}
	if p.Image != "win11" || p.Target.Disk != "first" {
		t.Errorf("Verify returned %+v", p)
	}
	otherPub, _, _ := ed25519.GenerateKey(nil)
	tamper := func(f func(*SignedPlan)) []byte {
		var sp SignedPlan
		json.Unmarshal(data, &sp)
		f(&sp)
		b, _ := json.Marshal(sp)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		pub  ed25519.PublicKey
		mac  string
		want error
		// nonce is the agent's; testNonce if empty.
		nonce string
	}{
		{"unsigned", tamper(func(sp *SignedPlan) { sp.Signature = "" }), pub, "", ErrBadSignature, ""},
		{"tampered target", tamper(func(sp *SignedPlan) {
			sp.Plan = json.RawMessage(strings.Replace(string(sp.Plan), `"first"`, `"sdb"`, 1))
		}), pub, "", ErrBadSignature, ""},
		{"on_error changed to shell", tamper(func(sp *SignedPlan) {
			sp.Plan = json.RawMessage(strings.Replace(string(sp.Plan), `"on_error":"halt"`, `"on_error":"shell"`, 1))
		}), pub, "", ErrBadSignature, ""},
		{"signed by another key", data, otherPub, "", ErrBadSignature, ""},
		{"no key built in", data, nil, "", ErrBadSignature, ""},
		{"another machine", data, pub, "52:54:00:00:00:01", ErrBadPlan, ""},
		{"not json", []byte("<html>"), pub, "", ErrBadPlan, ""},
		{"truncated", data[:len(data)/2], pub, "", ErrBadPlan, ""},
		{"bad signature encoding", tamper(func(sp *SignedPlan) { sp.Signature = "!!" }), pub, "", ErrBadSignature, ""},
		{"replayed: signed for another request", data, pub, "52:54:00:12:34:56", ErrReplay, "ffeeddccbbaa99887766554433221100"},
		{"nonce removed", tamper(func(sp *SignedPlan) {
			sp.Plan = json.RawMessage(strings.Replace(string(sp.Plan), testNonce, "ffeeddccbbaa99887766554433221100", 1))
		}), pub, "", ErrBadSignature, ""},
	} {
		if tc.nonce == "" {
			tc.nonce = testNonce
		}
		if _, err := Verify(tc.data, tc.pub, tc.mac, tc.nonce); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify() error = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSignRefusesBadPlans(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	for _, tc := range []struct {
		name string
		edit func(*Plan)
	}{
		{"bad mac", func(p *Plan) { p.MAC = "52-54-00-12-34-56" }},
		{"no target", func(p *Plan) { p.Target = Target{} }},
		{"two targets", func(p *Plan) { p.Target.Label = "Windows" }},
		{"partition without disk", func(p *Plan) { p.Target = Target{Partition: 2, Label: "x"} }},
		{"bad check", func(p *Plan) { p.CheckMode = "maybe" }},
		{"bad after", func(p *Plan) { p.After = "dance" }},
		{"no on_error", func(p *Plan) { p.OnError = "" }},
		{"unknown on_error", func(p *Plan) { p.OnError = "reboot" }},
		{"on_error in capitals", func(p *Plan) { p.OnError = "SHELL" }},
		{"bad seed_for", func(p *Plan) { p.SeedFor = "ten minutes" }},
		{"bad info-hash", func(p *Plan) { p.InfoHash = "xyz" }},
		{"no action", func(p *Plan) { p.Action = "" }},
		{"no nonce", func(p *Plan) { p.Nonce = "" }},
		{"short nonce", func(p *Plan) { p.Nonce = "abcd" }},
		{"no report token", func(p *Plan) { p.ReportToken = "" }},
		{"report token not hex", func(p *Plan) { p.ReportToken = strings.Repeat("Z", 48) }},
		{"unknown action", func(p *Plan) { p.Action = "wipe" }},
		{"capture without capture_id", func(p *Plan) { p.Action, p.Torrent, p.InfoHash = ActionCapture, "", "" }},
		{"capture with a torrent", func(p *Plan) { p.Action, p.CaptureID = ActionCapture, testCaptureID }},
		{"capture that creates a table", func(p *Plan) {
			p.Action, p.CaptureID, p.Torrent, p.InfoHash, p.CreateTable = ActionCapture, testCaptureID, "", "", true
		}},
		{"capture with a bad name", func(p *Plan) {
			p.Action, p.CaptureID, p.Torrent, p.InfoHash, p.Image = ActionCapture, testCaptureID, "", "", "../etc"
		}},
		{"capture with a bad capture_id", func(p *Plan) {
			p.Action, p.CaptureID, p.Torrent, p.InfoHash = ActionCapture, "c-../../x", "", ""
		}},
		{"deploy with a capture_id", func(p *Plan) { p.CaptureID = testCaptureID }},
		{"seeder by name", func(p *Plan) { p.Seeders = []string{"images.school.example:6881"} }},
		{"seeder without port", func(p *Plan) { p.Seeders = []string{"198.18.0.1"} }},
		{"seeder port 0", func(p *Plan) { p.Seeders = []string{"198.18.0.1:0"} }},
		{"too many seeders", func(p *Plan) {
			p.Seeders = slices.Repeat([]string{"198.18.0.1:6881"}, MaxSeeders+1)
		}},
		{"disk not a device name", func(p *Plan) { p.Target = Target{Disk: "../sda"} }},
		{"partition past 128", func(p *Plan) { p.Target = Target{Disk: "sda", Partition: 129} }},
		{"guid not a guid", func(p *Plan) { p.Target = Target{GUID: "1a2b3c4d-02"} }},
		{"label too long", func(p *Plan) { p.Target = Target{Label: strings.Repeat("x", 37)} }},
	} {
		p := testPlan()
		tc.edit(p)
		if _, err := Sign(p, key); !errors.Is(err, ErrBadPlan) {
			t.Errorf("%s: Sign() error = %v, want ErrBadPlan", tc.name, err)
		}
	}
}

const testCaptureID = "c-0123456789abcdef"

// TestCapturePlanVerifies: a capture plan (no torrent, no check mode)
// signs, verifies and keeps its capture fields.
func TestCapturePlanVerifies(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	p := testPlan()
	p.Action, p.CaptureID, p.Raw, p.Torrent, p.InfoHash, p.CheckMode, p.CreateTable = ActionCapture, testCaptureID, true, "", "", "", false
	p.Seeders = nil
	data, err := Sign(p, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(data, pub, p.MAC, p.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	if got.Action != ActionCapture || got.CaptureID != testCaptureID || !got.Raw || got.Image != p.Image {
		t.Errorf("verified capture plan = %+v", got)
	}
}

// FuzzVerify: whatever arrives over HTTP, Verify never panics and never
// returns a plan unless the signature verifies.
func FuzzVerify(f *testing.F) {
	seed := make([]byte, ed25519.SeedSize)
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	good, _ := Sign(testPlan(), key)
	f.Add(good)
	f.Add([]byte(`{"plan":{},"signature":""}`))
	f.Add([]byte(`{"plan":"x","signature":"` + base64.StdEncoding.EncodeToString(make([]byte, 64)) + `"}`))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Verify(data, pub, "", "")
		if err != nil {
			if !errors.Is(err, ErrBadPlan) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify error %v wraps neither sentinel", err)
			}
			return
		}
		var sp SignedPlan
		if json.Unmarshal(data, &sp) != nil {
			t.Fatalf("accepted undecodable input")
		}
		sig, _ := base64.StdEncoding.DecodeString(sp.Signature)
		if !ed25519.Verify(pub, sp.Plan, sig) || p.Check() != nil {
			t.Fatalf("accepted a plan whose signature or fields do not check")
		}
	})
}

// TestPlanDiscard: discard travels in the signed plan when set, and is
// left out of the JSON when not, so such a plan still decodes on an agent
// that predates it (Verify refuses unknown fields).
func TestPlanDiscard(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, discard := range []bool{false, true} {
		p := testPlan()
		p.Discard = discard
		data, err := Sign(p, key)
		if err != nil {
			t.Fatal(err)
		}
		var sp SignedPlan
		if err := json.Unmarshal(data, &sp); err != nil {
			t.Fatal(err)
		}
		if has := strings.Contains(string(sp.Plan), `"discard"`); has != discard {
			t.Errorf("Discard %v: plan JSON has a discard key = %v, want %v: %s", discard, has, discard, sp.Plan)
		}
		got, err := Verify(data, key.Public().(ed25519.PublicKey), p.MAC, testNonce)
		if err != nil || got.Discard != discard {
			t.Errorf("Verify(plan with Discard %v) = %+v, %v", discard, got, err)
		}
	}
}
