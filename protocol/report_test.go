package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestReportReceivedCheck(t *testing.T) {
	many := make([]Received, MaxReportSources+1)
	for i := range many {
		many[i] = Received{From: fmt.Sprintf("198.18.1.%d:6881", i+1), Bytes: 1}
	}
	for _, tc := range []struct {
		name string
		rs   []Received
		ok   bool
	}{
		{"none", nil, true},
		{"server and peers", []Received{{SourceServer, 5 << 20}, {"198.18.1.12:6881", 3 << 20}, {"[2001:db8::1]:6881", 0}}, true},
		{"max sources", many[:MaxReportSources], true},
		{"too many sources", many, false},
		{"negative", []Received{{SourceServer, -1}}, false},
		{"huge", []Received{{SourceServer, MaxSourceBytes + 1}}, false},
		{"twice", []Received{{"198.18.1.12:6881", 1}, {"198.18.1.12:6881", 2}}, false},
		{"server twice", []Received{{SourceServer, 1}, {SourceServer, 2}}, false},
		{"no port", []Received{{"198.18.1.12", 1}}, false},
		{"port 0", []Received{{"198.18.1.12:0", 1}}, false},
		{"a name", []Received{{"pc-01:6881", 1}}, false},
		{"markup", []Received{{"<b>x</b>", 1}}, false},
		{"zone", []Received{{"[fe80::1%eth0]:6881", 1}}, false},
		{"empty", []Received{{"", 1}}, false},
	} {
		r := Report{Phase: PhaseImaging, Received: tc.rs}
		err := r.Check()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Check() = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadReport) {
			t.Errorf("%s: Check() = %v, does not wrap ErrBadReport", tc.name, err)
		}
	}
}

// FuzzReceived: whatever a LAN host sends as a report's sources, decoding
// and Check never panic; what Check accepts is bounded (MaxReportSources
// sources, each named once, "server" or an IP:port, 0 to MaxSourceBytes)
// and round-trips through JSON.
func FuzzReceived(f *testing.F) {
	f.Add([]byte(`{"phase":"imaging","peer_port":6881,"received":[{"from":"server","bytes":5},{"from":"198.18.1.12:6881","bytes":7}]}`))
	f.Add([]byte(`{"phase":"imaging","received":[{"from":"[::1]:1","bytes":-1},{"from":"server","bytes":1e20}]}`))
	f.Add([]byte(`{"phase":"imaging","received":[{"from":"1.2.3.4:5","bytes":1},{"from":"1.2.3.4:5","bytes":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Report
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if dec.Decode(&r) != nil {
			return
		}
		if err := r.Check(); err != nil {
			if !errors.Is(err, ErrBadReport) {
				t.Fatalf("Check() = %v, does not wrap ErrBadReport", err)
			}
			return
		}
		if len(r.Received) > MaxReportSources {
			t.Fatalf("accepted %d sources", len(r.Received))
		}
		seen := map[string]bool{}
		for _, s := range r.Received {
			if seen[s.From] {
				t.Fatalf("accepted %q twice", s.From)
			}
			seen[s.From] = true
			if s.Bytes < 0 || s.Bytes > MaxSourceBytes {
				t.Fatalf("accepted %d bytes", s.Bytes)
			}
			if s.From != SourceServer {
				if _, err := netip.ParseAddrPort(s.From); err != nil || strings.ContainsAny(s.From, "<>\"'&%") {
					t.Fatalf("accepted source %q", s.From)
				}
			}
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back Report
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r.Received, back.Received, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip (-accepted +decoded):\n%s", diff)
		}
	})
}
