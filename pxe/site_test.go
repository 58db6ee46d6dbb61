package pxe

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestExampleSiteParses(t *testing.T) {
	s, err := LoadSite("../docs/site.example.toml")
	if err != nil {
		t.Fatalf("LoadSite(docs/site.example.toml) = %v, want the documented example to load", err)
	}
	if s.DHCP.Mode != "full" || s.DHCP.Option != 224 || s.Plan.SeedFor.Duration != 10*time.Minute ||
		len(s.Images) != 1 || len(s.Machines) != 2 || len(s.Tracker.Groups) != 1 {
		t.Errorf("example parsed to %+v", s)
	}
	if !strings.HasSuffix(s.Images[0].Torrent, "docs/images/lab-2026.torrent") {
		t.Errorf("torrent path %q, want it relative to the file", s.Images[0].Torrent)
	}
}

func TestSiteDefaults(t *testing.T) {
	s, err := ParseSite([]byte("interface = \"br0\"\n[[image]]\nsource = [\"/srv/lab.img\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"dhcp.mode", s.DHCP.Mode, "proxy"},
		{"http.listen", s.HTTP.Listen, ":8080"},
		{"image name", s.Images[0].Name, "lab"},
		{"plan.disk", s.Plan.Disk, "first"},
		{"plan.check", s.Plan.Check, "verify"},
		{"plan.after", s.Plan.After, "reboot"},
		{"plan.on_error", s.Plan.OnError, "halt"},
		{"plan.auto", s.Plan.Auto, "none"},
		{"tftp.root", s.TFTP.Root, "/usr/lib/ipxe"},
		{"dhcp.lease_time", s.DHCP.LeaseTime.Duration, time.Hour},
		{"max_machines", s.MaxMachines, 4096},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestSiteErrors(t *testing.T) {
	const img = "\n[[image]]\nsource = [\"/srv/lab.img\"]\n"
	tests := []struct {
		name, toml, want string
	}{
		{"unknown key", "interface = \"br0\"\nintreface = \"x\"" + img, "unknown key(s) intreface"},
		{"unknown nested key", "interface = \"br0\"\n[dhcp]\npool_begin = \"198.18.0.1\"" + img, "dhcp.pool_begin"},
		{"bad mode", "interface = \"br0\"\n[dhcp]\nmode = \"fulll\"" + img, "want full, proxy or off"},
		{"no interface", "[dhcp]\nmode = \"proxy\"" + img, "interface: required"},
		{"no pool", "interface = \"br0\"\n[dhcp]\nmode = \"full\"" + img, "pool_start"},
		{"pool outside subnet", "interface = \"br0\"\n[dhcp]\nmode = \"full\"\npool_start = \"198.18.0.10\"\npool_end = \"198.18.1.10\"\nprefix_len = 24" + img, "not in 198.18.0.0/24"},
		{"bad address", "interface = \"br0\"\naddress = \"198.18.0.300\"" + img, "198.18.0.300"},
		{"bad duration", "interface = \"br0\"\n[plan]\nseed_for = \"ten minutes\"" + img, "write it like 90s"},
		{"bad option", "interface = \"br0\"\n[dhcp]\noption = 43" + img, "224–254"},
		{"two targets", "interface = \"br0\"\n[plan]\ndisk = \"sda\"\nlabel = \"root\"" + img, "exactly one of disk"},
		{"bad after", "interface = \"br0\"\n[plan]\nafter = \"explode\"" + img, "reboot, poweroff or shell"},
		{"https on the http port", "interface = \"br0\"\n[http]\nlisten = \":8080\"\nhttps_listen = \":8080\"" + img, "own port"},
		{"https without a port", "interface = \"br0\"\n[http]\nhttps_listen = \"8443\"" + img, "http.https_listen"},
		{"tls_cert without tls_key", "interface = \"br0\"\n[http]\nhttps_listen = \":8443\"\ntls_cert = \"/etc/c.pem\"" + img, "together"},
		{"tls_cert without https", "interface = \"br0\"\n[http]\ntls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"" + img, "unused"},
		{"bad on_error", "interface = \"br0\"\n[plan]\non_error = \"reboot\"" + img, "plan.on_error"},
		{"unknown plan image", "interface = \"br0\"\n[plan]\nimage = \"nope\"" + img, "not the name of an [[image]]"},
		{"no image", "interface = \"br0\"\n[http]\ncapture_dir = \"off\"\n", "no [[image]]"},
		{"no source", "interface = \"br0\"\n[[image]]\ntorrent = \"x.torrent\"", "list its source"},
		{"bad mac", "interface = \"br0\"\n[[machine]]\nmac = \"52:54:00\"" + img, "machine[0].mac"},
		{"duplicate mac", "interface = \"br0\"\n[[machine]]\nmac = \"52:54:00:00:00:01\"\n[[machine]]\nmac = \"52-54-00-00-00-01\"" + img, "listed twice"},
		{"short token", "interface = \"br0\"\n[http]\nadmin_token = \"abc\"" + img, "at least 16"},
		{"syntax", "interface = br0" + img, "line 1"},
		{"bad piece length", "interface = \"br0\"\n[[image]]\nsource = [\"/a\"]\npiece_length = \"3MiB\"", "piece_length"},
		{"bad image name", "interface = \"br0\"\n[[image]]\nname = \"lab 2026\"\nsource = [\"/a\"]", "image[0].name"},
		{"relative image dir", "interface = \"br0\"\n[http]\nimage_dirs = [\"images\"]" + img, "http.image_dirs[0]"},
		{"auto without dhcp", "[dhcp]\nmode = \"off\"\n[plan]\nauto = \"all\"" + img, "needs dhcp.mode full or proxy"},
		{"reserve over pool", "interface = \"br0\"\n[dhcp]\nmode = \"full\"\npool_start = \"198.18.0.10\"\npool_end = \"198.18.0.19\"\npool_reserve = 11" + img, "dhcp.pool_reserve"},
		{"max machines", "interface = \"br0\"\nmax_machines = -1" + img, "max_machines"},
		{"bad console", "interface = \"br0\"\n[http]\nconsole = \"yes\"" + img, "http.console"},
		{"short console session", "interface = \"br0\"\n[http]\nconsole_session = \"10s\"" + img, "http.console_session"},
		{"console password not hashed", "interface = \"br0\"\n[http]\nconsole_password_hash = \"hunter2\"" + img, "not a bcrypt hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSite([]byte(tt.toml))
			if err == nil || !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSite(%q) = %v, want ErrBadConfig mentioning %q", tt.toml, err, tt.want)
			}
		})
	}
}

// TestSiteCheckIsPure: Check changes nothing, ApplyDefaults does all the
// filling in and gives the same site when run twice.
func TestSiteCheckIsPure(t *testing.T) {
	raw := func() *Site {
		return &Site{Interface: "br0", PublicURL: "http://198.18.0.1:8080/",
			Images:   []SiteImage{{Source: []string{"/srv/lab.img"}}},
			Machines: []SiteMachine{{MAC: "52-54-00-00-01-01"}}}
	}
	opts := cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, duration{})
	s := raw()
	if err := s.Check(); err == nil {
		t.Error("Check() before ApplyDefaults = nil, want the missing dhcp.mode reported")
	}
	if d := cmp.Diff(raw(), s, opts); d != "" {
		t.Errorf("Check changed the site (-before +after):\n%s", d)
	}
	s.ApplyDefaults()
	defaulted := raw()
	defaulted.ApplyDefaults()
	if err := s.Check(); err != nil {
		t.Fatalf("Check() after ApplyDefaults = %v", err)
	}
	if d := cmp.Diff(defaulted, s, opts); d != "" {
		t.Errorf("Check changed a defaulted site (-before +after):\n%s", d)
	}
	s.ApplyDefaults()
	if d := cmp.Diff(defaulted, s, opts); d != "" {
		t.Errorf("ApplyDefaults twice differs from once (-once +twice):\n%s", d)
	}
	if s.PublicURL != "http://198.18.0.1:8080" || s.Machines[0].MAC != "52:54:00:00:01:01" || s.Images[0].Name != "lab" || s.Seed.Port != 6881 {
		t.Errorf("ApplyDefaults gave %+v", s)
	}
}

func TestLoadSiteMissingFile(t *testing.T) {
	_, err := LoadSite(t.TempDir() + "/none.toml")
	if !errors.Is(err, ErrBadConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadSite(missing) = %v, want ErrBadConfig wrapping ErrNotExist", err)
	}
}

// FuzzParseSite: a config file is input an admin types; any bytes give a
// config or an ErrBadConfig, never a panic.
func FuzzParseSite(f *testing.F) {
	if b, err := os.ReadFile("../docs/site.example.toml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("interface = \"br0\"\n[[image]]\nsource = [\"/a\"]\n"))
	f.Add([]byte("[dhcp]\nmode = 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSite(data)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("ParseSite error %v does not wrap ErrBadConfig", err)
			}
			return
		}
		// No image is allowed only where one can arrive while serving: a
		// capture folder or image folders.
		noImageSource := s.HTTP.CaptureDir == "off" && len(s.HTTP.ImageDirs) == 0
		if (len(s.Images) == 0 && noImageSource) || s.DHCP.Option < 224 {
			t.Fatalf("accepted config breaks its own rules: %+v", s)
		}
	})
}

// TestSiteSeedForZero: seed_for = "0s" means no seeding after imaging;
// only a missing seed_for takes the 10m default.
func TestSiteSeedForZero(t *testing.T) {
	for _, tc := range []struct {
		conf string
		want time.Duration
	}{
		{"[plan]\nseed_for = \"0s\"\n", 0},
		{"[plan]\nseed_for = \"90s\"\n", 90 * time.Second},
		{"", 10 * time.Minute},
	} {
		s, err := ParseSite([]byte("interface = \"br0\"\n[[image]]\nsource = [\"/srv/lab.img\"]\n" + tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		if s.Plan.SeedFor.Duration != tc.want {
			t.Errorf("ParseSite(%q) seed_for = %v, want %v", tc.conf, s.Plan.SeedFor.Duration, tc.want)
		}
	}
}
