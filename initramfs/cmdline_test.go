package initramfs

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Cmdline
		wantErr string // substring; "" means no error
	}{
		{"", Cmdline{}, ""},
		{"console=ttyS0 quiet", Cmdline{}, ""},
		// What pxe's iPXE script writes.
		{"initrd=initramfs console=ttyS0 pxeswarm.server=http://198.18.0.1:8080 pxeswarm.mac=52:54:00:12:34:56 pxeswarm.task=t7\n",
			Cmdline{Server: "http://198.18.0.1:8080", MAC: "52:54:00:12:34:56", Task: "t7"}, ""},
		// Upper case and hyphens are normalised; a trailing slash dropped.
		{"pxeswarm.mac=52-54-00-AB-CD-EF pxeswarm.server=https://img.example/", Cmdline{Server: "https://img.example", MAC: "52:54:00:ab:cd:ef"}, ""},
		// Quotes around the value or the whole parameter (lib/cmdline.c).
		{`pxeswarm.server="http://198.18.0.1:8080" "pxeswarm.task=t1" foo="a b c"`, Cmdline{Server: "http://198.18.0.1:8080", Task: "t1"}, ""},
		{"pxeswarm.debug", Cmdline{Debug: true}, ""},
		{"pxeswarm.debug=1", Cmdline{Debug: true}, ""},
		{"pxeswarm.debug=yes pxeswarm.debug=0", Cmdline{}, ""},
		{"pxeswarm.readback=0", Cmdline{NoReadBack: true}, ""},
		{"pxeswarm.readback=1", Cmdline{}, ""},
		// What the rescue stick's boot entry writes.
		{"console=ttyS0 pxeswarm.stick=1C5E2D4F-9A0B-4C3D-8E7F-0123456789AB pxeswarm.mode=local",
			Cmdline{Stick: "1c5e2d4f-9a0b-4c3d-8e7f-0123456789ab", Mode: ModeLocal}, ""},
		{"pxeswarm.stick=sda1 pxeswarm.mode=network", Cmdline{Mode: ModeNetwork}, "partition GUID"},
		{"pxeswarm.mode=usb", Cmdline{}, "pxeswarm.mode"},
		{"pxeswarm.on_error=retry", Cmdline{OnError: "retry"}, ""},
		{"pxeswarm.on_error=reboot pxeswarm.task=t1", Cmdline{Task: "t1"}, "halt, retry or shell"},
		// A later parameter wins.
		{"pxeswarm.task=t1 pxeswarm.task=t2", Cmdline{Task: "t2"}, ""},
		// Bad values are dropped and named; good ones kept.
		{"pxeswarm.server=ftp://x pxeswarm.task=t3", Cmdline{Task: "t3"}, "pxeswarm.server"},
		{"pxeswarm.server=198.18.0.1:8080", Cmdline{}, "http URL"},
		{"pxeswarm.mac=52:54:00:12:34 pxeswarm.debug", Cmdline{Debug: true}, "pxeswarm.mac"},
		{"pxeswarm.task=a/b", Cmdline{}, "task ID"},
		{"pxeswarm.task=", Cmdline{}, "task ID"},
		{"pxeswarm.debug=maybe", Cmdline{}, "pxeswarm.debug"},
		{"pxeswarm.sever=http://x", Cmdline{}, "unknown parameter pxeswarm.sever"},
		// Tabs and several spaces separate too.
		{"\tpxeswarm.task=t9   pxeswarm.debug\t", Cmdline{Task: "t9", Debug: true}, ""},
	} {
		got, err := ParseCmdline(tc.in)
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("ParseCmdline(%q) (-want +got):\n%s", tc.in, d)
		}
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ParseCmdline(%q) error = %v, want none", tc.in, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseCmdline(%q) error = %v, want one mentioning %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestSplitCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b ", []string{"a", "b"}},
		{`a="x y" b`, []string{"a=x y", "b"}},
		{`"a=x y"`, []string{"a=x y"}},
		{`a="" b`, []string{"a=", "b"}},
		{`a="unterminated b`, []string{"a=unterminated b"}},
	} {
		if got := splitCmdline(tc.in); !cmp.Equal(got, tc.want) {
			t.Errorf("splitCmdline(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("pxeswarm.server=http://198.18.0.1:8080 pxeswarm.mac=52:54:00:12:34:56 pxeswarm.task=t1")
	f.Add(`pxeswarm.server="http://a b" "pxeswarm.debug"`)
	f.Fuzz(func(t *testing.T, s string) {
		c, _ := ParseCmdline(s)
		if c.Server != "" && !httpURL(c.Server) {
			t.Errorf("ParseCmdline(%q).Server = %q, not an http URL", s, c.Server)
		}
		if c.MAC != "" && len(c.MAC) != 17 {
			t.Errorf("ParseCmdline(%q).MAC = %q", s, c.MAC)
		}
		if strings.ContainsAny(c.Task, " /?#") {
			t.Errorf("ParseCmdline(%q).Task = %q", s, c.Task)
		}
	})
}
