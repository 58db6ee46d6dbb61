package pxe

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSiteWake: [wake] defaults come from the site's interface (its
// subnets' broadcasts), "off" and explicit broadcasts override them, and
// bad values are config errors naming the key.
func TestSiteWake(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	s := &Site{Interface: "lo", DHCP: SiteDHCP{Mode: "off"}}
	s.ApplyDefaults()
	if s.Wake.Port != 9 || s.Wake.RetryEvery.Duration != 30*time.Second || s.Wake.Retries != 5 || s.Schedule.Grace.Duration != time.Hour {
		t.Errorf("defaults = %+v %+v", s.Wake, s.Schedule)
	}
	if s.scheduleLocation() != time.Local {
		t.Errorf("no schedule.time_zone gives %v, want the local zone", s.scheduleLocation())
	}
	wc := s.wakeConfig(log)
	if wc.Interface != "lo" || !slices.Contains(wc.Addrs, netip.MustParseAddr("127.255.255.255")) {
		t.Errorf("wake config from interface lo = %+v, want lo and 127.255.255.255", wc)
	}
	s.Wake.Interface, s.Wake.Broadcasts = "off", []netip.Addr{netip.MustParseAddr("198.18.0.255")}
	if wc := s.wakeConfig(log); wc.Interface != "" || !slices.Equal(wc.Addrs, s.Wake.Broadcasts) {
		t.Errorf("wake config with interface off = %+v, want only 198.18.0.255", wc)
	}
	s.Wake.Broadcasts = nil
	if wc := s.wakeConfig(log); wc.Enabled() {
		t.Errorf("interface off and no broadcasts still sends: %+v", wc)
	}

	for _, tc := range []struct {
		toml, key string
	}{
		{"[wake]\npassword = \"secret\"", "wake.password"},
		{"[wake]\nretries = 1000", "wake.retries"},
		{"[wake]\nretry_every = \"10ms\"", "wake.retry_every"},
		{"[wake]\nbroadcasts = [\"2001:db8::1\"]", "wake.broadcasts[0]"},
		{"[schedule]\ngrace = \"1s\"", "schedule.grace"},
		{"[schedule]\ntime_zone = \"Mars/Olympus\"", "schedule.time_zone"},
	} {
		_, err := ParseSite([]byte("[dhcp]\nmode = \"off\"\n[[image]]\nsource = [\"/x.img\"]\n" + tc.toml))
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%q: %v, want a config error naming %s", tc.toml, err, tc.key)
		}
	}
	if _, err := ParseSite([]byte("[dhcp]\nmode = \"off\"\n[[image]]\nsource = [\"/x.img\"]\n[wake]\npassword = \"1.2.3.4\"\nretries = -1\n[schedule]\ntime_zone = \"UTC\"\ngrace = \"2h\"")); err != nil {
		t.Errorf("a good [wake] and [schedule]: %v", err)
	}
}
