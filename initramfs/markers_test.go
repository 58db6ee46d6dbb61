package initramfs

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/partition"
)

func TestMarkers(t *testing.T) {
	const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	const ih = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name, got, want string
	}{
		{"version", markVersion("v0.3.0"), "pxeswarm: version v0.3.0"},
		{"coldplug", markColdplug(7), "pxeswarm: coldplug 7 modules"},
		{"lease dhcp", markLease("http://198.18.0.1:8080", FromDHCP, "eth0", "198.18.0.100/24"),
			"pxeswarm: lease ok server=http://198.18.0.1:8080 from=dhcp iface=eth0 addr=198.18.0.100/24"},
		{"lease config", markLease("http://127.0.0.1:1", FromConfig, "", ""), "pxeswarm: lease ok server=http://127.0.0.1:1 from=config"},
		{"plan", markPlan("t1", "win11"), "pxeswarm: plan ok task=t1 image=win11"},
		{"disk", markDisk(partition.Disk{Path: "/dev/vda", Size: 64 << 30, Model: "QEMU HARDDISK", Table: "gpt"}),
			`pxeswarm: disk /dev/vda 64GiB model="QEMU HARDDISK" serial=- removable=no table=gpt`},
		{"disk boot", markDisk(partition.Disk{Path: "/dev/sdb", Size: 8 << 30, Serial: "AA12", Removable: true, Boot: "label PXESWARM", InUse: "sdb1 mounted", ReadOnly: true}),
			`pxeswarm: disk /dev/sdb 8GiB model="" serial=AA12 removable=yes table=- boot-medium in-use read-only`},
		{"target", markTarget("/dev/vda", 64<<30), "pxeswarm: target /dev/vda (64GiB)"},
		{"table", markTable("gpt", "/dev/vda", 2), "pxeswarm: table gpt created on /dev/vda (2 partitions)"},
		{"writing", markWriting("win11", 20<<30, "/dev/vda"), "pxeswarm: writing win11 (20GiB) to /dev/vda"},
		{"done", markImageDone(sum, ih, 12345), "pxeswarm: IMAGE DONE sha256=" + sum + " infohash=" + ih + " bytes=12345"},
		{"done no read-back", markImageDone("", ih, 1), "pxeswarm: IMAGE DONE infohash=" + ih + " bytes=1 (pieces verified on arrival; not read back)"},
		{"seeding", markSeeding((10 * time.Minute).String()), "pxeswarm: seeding for 10m0s"},
		{"error", markError("the plan is not signed by this server's key", "rebuild the initramfs with the server's plan-key.pub"),
			"pxeswarm: ERROR the plan is not signed by this server's key — rebuild the initramfs with the server's plan-key.pub"},
		{"error one line", markError("a\nmulti-line\n\terror", ""), "pxeswarm: ERROR a multi-line error"},
		{"shell", markShell("/bbin/gosh"), "pxeswarm: shell /bbin/gosh"},
		{"halt", markHalt("halt", "plan"), "pxeswarm: halted (on_error=halt from plan): the error is above; this machine does nothing more and has no shell: fix the cause, then reset or power-cycle it to try again"},
		{"retry", markRetry(15*time.Second, 2, "default"), "pxeswarm: retrying in 15s (attempt 2; on_error=retry from default)"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s marker = %q, want %q", tc.name, tc.got, tc.want)
		}
		if !strings.HasPrefix(tc.got, "pxeswarm: ") || strings.Contains(tc.got, "\n") {
			t.Errorf("%s marker %q: want one line starting with \"pxeswarm: \"", tc.name, tc.got)
		}
	}
}

func TestConsole(t *testing.T) {
	var b bytes.Buffer
	c := NewConsole(&b)
	c.SetTerminal(true)
	p := imager.Progress{State: imager.StateDownloading, Total: 100 << 20, Done: 50 << 20, Rate: 10 << 20, Peers: 3}
	c.Progress(p)
	c.Progress(p)
	c.Println(MarkImageDone)
	want := "\r" + pad(p.Bar(79), 79) + "\r" + pad(p.Bar(79), 79) + "\n" + MarkImageDone + "\n"
	if b.String() != want {
		t.Errorf("terminal console wrote %q, want %q", b.String(), want)
	}

	// Not a terminal: one line per state change or per plainEvery.
	b.Reset()
	c = NewConsole(&b)
	c.Progress(p)
	c.Progress(p)
	p.State = imager.StateSeeding
	c.Progress(p)
	c.Write([]byte("log line\n"))
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], MarkProgress+" downloading") || !strings.HasPrefix(lines[1], MarkProgress+" seeding") || lines[2] != "log line" {
		t.Errorf("plain console wrote %q, want a downloading line, a seeding line and the log line", b.String())
	}
}

func pad(s string, n int) string {
	if len(s) < n {
		return s + strings.Repeat(" ", n-len(s))
	}
	return s
}
