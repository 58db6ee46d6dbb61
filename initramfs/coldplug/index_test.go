package coldplug

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestModuleName(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"kernel/drivers/usb/storage/usb-storage.ko.xz", "usb_storage"},
		{"kernel/drivers/net/virtio_net.ko", "virtio_net"},
		{"kernel/crypto/crct10dif-pclmul.ko.zst", "crct10dif_pclmul"},
		{"kernel/lib/crc-t10dif.ko.gz", "crc_t10dif"},
		{"usb-storage", "usb_storage"},
		{"t10_pi", "t10_pi"},
	} {
		if got := ModuleName(tc.file); got != tc.want {
			t.Errorf("ModuleName(%q) = %q, want %q", tc.file, got, tc.want)
		}
	}
}

func TestParseDep(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		files   map[string]string
		deps    map[string][]string
		wantErr bool
	}{
		{
			name: "depmod",
			in: "kernel/drivers/net/nic.ko.xz: kernel/drivers/net/phy/libphy.ko.zst kernel/drivers/net/mdio.ko\n" +
				"kernel/drivers/net/phy/libphy.ko.zst:\n" +
				"kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko\n",
			files: map[string]string{
				"nic":         "kernel/drivers/net/nic.ko.xz",
				"libphy":      "kernel/drivers/net/phy/libphy.ko.zst",
				"usb_storage": "kernel/drivers/usb/storage/usb-storage.ko",
			},
			deps: map[string][]string{
				"nic":         {"libphy", "mdio"},
				"usb_storage": {"scsi_mod"},
			},
		},
		{
			name:  "blank lines, comments and spaces",
			in:    "\n# made by hand\n  kernel/a.ko :  kernel/b.ko\t kernel/c-d.ko  \n\n",
			files: map[string]string{"a": "kernel/a.ko"},
			deps:  map[string][]string{"a": {"b", "c_d"}},
		},
		{
			name:    "a line without ':' is passed over and named",
			in:      "kernel/a.ko:\nthis is not depmod output\nkernel/b.ko: kernel/a.ko\n",
			files:   map[string]string{"a": "kernel/a.ko", "b": "kernel/b.ko"},
			deps:    map[string][]string{"b": {"a"}},
			wantErr: true,
		},
		{name: "empty", files: map[string]string{}, deps: map[string][]string{}},
	} {
		files, deps, err := ParseDep([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: ParseDep(%q) error = %v, want error %v", tc.name, tc.in, err, tc.wantErr)
		}
		if diff := cmp.Diff(tc.files, files); diff != "" {
			t.Errorf("%s: ParseDep(%q) files (-want +got):\n%s", tc.name, tc.in, diff)
		}
		if diff := cmp.Diff(tc.deps, deps); diff != "" {
			t.Errorf("%s: ParseDep(%q) deps (-want +got):\n%s", tc.name, tc.in, diff)
		}
	}
}

func TestParseBuiltin(t *testing.T) {
	in := "kernel/drivers/virtio/virtio_pci.ko\n\nkernel/block/t10-pi.ko\ncrc32c\n"
	want := map[string]bool{"virtio_pci": true, "t10_pi": true, "crc32c": true}
	if diff := cmp.Diff(want, ParseBuiltin([]byte(in))); diff != "" {
		t.Errorf("ParseBuiltin(%q) (-want +got):\n%s", in, diff)
	}
}

func TestParseAliases(t *testing.T) {
	in := `# Aliases extracted from modules themselves.
alias pci:v00001234d*sv*sd*bc*sc*i* nic
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb-storage
alias crct10dif
alias a b c
symbol:crc32c crc32c_generic
alias crct10dif crct10dif_pclmul
`
	want := []Alias{
		{"pci:v00001234d*sv*sd*bc*sc*i*", "nic"},
		{"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*", "usb_storage"},
		{"crct10dif", "crct10dif_pclmul"},
	}
	if diff := cmp.Diff(want, ParseAliases([]byte(in))); diff != "" {
		t.Errorf("ParseAliases(%q) (-want +got):\n%s", in, diff)
	}
}

func TestParseSoftdep(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]Softdep
	}{
		{"softdep r8169 pre: realtek\n", map[string]Softdep{"r8169": {Pre: []string{"realtek"}}}},
		{"softdep unrelated post: mdio", map[string]Softdep{"unrelated": {Post: []string{"mdio"}}}},
		{
			"softdep crc-t10dif pre: crct10dif post: a b\n",
			map[string]Softdep{"crc_t10dif": {Pre: []string{"crct10dif"}, Post: []string{"a", "b"}}},
		},
		// depmod writes "softdep cifs gcm" for a pre dependency.
		{"softdep cifs gcm ccm", map[string]Softdep{"cifs": {Pre: []string{"gcm", "ccm"}}}},
		// pre: and post: may come in any order and again; targets are
		// kept as written (they may be aliases).
		{
			"softdep m post: x pre: crypto-crc32c post: y\n",
			map[string]Softdep{"m": {Pre: []string{"crypto-crc32c"}, Post: []string{"x", "y"}}},
		},
		// Several lines for one module add up; spaces and tabs are
		// separators.
		{
			"softdep m pre: a\n\t softdep   m\tpre: b post: c  \nsoftdep n pre: d\n",
			map[string]Softdep{"m": {Pre: []string{"a", "b"}, Post: []string{"c"}}, "n": {Pre: []string{"d"}}},
		},
		// Malformed or other lines are skipped.
		{
			"# Soft dependencies extracted from modules themselves.\n" +
				"softdep\n" +
				"softdep lonely\n" +
				"alias x y\n" +
				"Softdep m pre: a\n" +
				"pre: a\n" +
				"softdep ok pre: a\n",
			map[string]Softdep{"ok": {Pre: []string{"a"}}},
		},
		// A module with "pre:" and nothing else is listed with no targets.
		{"softdep m pre:\n", map[string]Softdep{"m": {}}},
		{"", map[string]Softdep{}},
	} {
		if diff := cmp.Diff(tc.want, ParseSoftdep([]byte(tc.in))); diff != "" {
			t.Errorf("ParseSoftdep(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func FuzzParseDep(f *testing.F) {
	f.Add([]byte("kernel/a-b.ko.xz: kernel/c.ko\nkernel/c.ko:\n# x\nno colon\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		files, deps, _ := ParseDep(b)
		for name := range files {
			if strings.Contains(name, "-") {
				t.Errorf("ParseDep(%q): name %q has a '-'", b, name)
			}
		}
		for name, ds := range deps {
			if _, ok := files[name]; !ok {
				t.Errorf("ParseDep(%q): deps of %q, which has no file", b, name)
			}
			if slices.ContainsFunc(ds, func(d string) bool { return strings.Contains(d, "-") }) {
				t.Errorf("ParseDep(%q): deps of %q = %q, a name has a '-'", b, name, ds)
			}
		}
	})
}

func FuzzParseSoftdep(f *testing.F) {
	f.Add([]byte("softdep crc-t10dif pre: crct10dif post: a b\nsoftdep cifs gcm\nsoftdep\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, sd := range ParseSoftdep(b) {
			if strings.Contains(name, "-") {
				t.Errorf("ParseSoftdep(%q): name %q has a '-'", b, name)
			}
			for _, w := range append(slices.Clone(sd.Pre), sd.Post...) {
				if w == "pre:" || w == "post:" || strings.TrimSpace(w) != w || w == "" {
					t.Errorf("ParseSoftdep(%q): %q has target %q", b, name, w)
				}
			}
		}
	})
}
