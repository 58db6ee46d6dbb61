package initramfs

import (
	"fmt"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
)

// Console markers. Every line the agent prints for tests and people to
// grep starts with one of these; they are stable: QEMU tests wait for
// them in this order, each with its own deadline:
//
//	pxeswarm: version v0.3.0
//	pxeswarm: coldplug 7 modules
//	pxeswarm: secure boot on lockdown=integrity   (or off, n/a on BIOS)
//	pxeswarm: stick /dev/sda esp=/dev/sda1 partuuid=… found-by=efi mode=local images=1   (rescue stick only)
//	pxeswarm: lease ok server=http://198.18.0.1:8080 from=dhcp iface=eth0 addr=198.18.0.100/24
//	pxeswarm: plan ok task=t1 image=win11
//	pxeswarm: disk /dev/vda 64GiB model="QEMU HARDDISK" serial=- removable=no table=gpt
//	pxeswarm: target /dev/vda (64GiB)
//	pxeswarm: table gpt created on /dev/vda (2 partitions)
//	pxeswarm: writing win11 (20GiB) to /dev/vda
//	pxeswarm: IMAGE DONE sha256=… infohash=… bytes=…
//	pxeswarm: seeding for 10m
//	pxeswarm: rebooting
//
// A capture plan prints, after the disk lines:
//
//	pxeswarm: capturing /dev/vda table=gpt parts=2 send 40MiB of 1GiB
//	pxeswarm: CAPTURE DONE image=golden infohash=… bytes=… took=42s
//	pxeswarm: rebooting
//
// or, on any error, pxeswarm: ERROR <what> — <what to do>, then by
// on_error one of pxeswarm: halted …, pxeswarm: retrying in … (and the
// markers again from version on) or pxeswarm: shell.
//
// The rescue stick's local mode has no server and no signed plan; its
// order is stick, plan ok task=stick (the stick's config, not a signed
// plan), disk…, choose/chosen (only when there is a choice), target,
// table, writing, IMAGE DONE, then lease ok (the network found meanwhile,
// if any), seeding, powering off.
const (
	MarkVersion = "pxeswarm: version"
	// MarkSecureBoot: the firmware's Secure Boot state (on, off, n/a
	// without UEFI) and the kernel's lockdown mode, if it says.
	MarkSecureBoot = "pxeswarm: secure boot"
	MarkColdplug   = "pxeswarm: coldplug"
	// MarkStick: booted from the rescue stick (which disk, how it was
	// found, the mode).
	MarkStick = "pxeswarm: stick"
	// MarkChoose asks the person at the console; MarkChosen says what
	// they chose.
	MarkChoose    = "pxeswarm: choose"
	MarkChosen    = "pxeswarm: chosen"
	MarkLease     = "pxeswarm: lease ok"
	MarkPlan      = "pxeswarm: plan ok"
	MarkDisk      = "pxeswarm: disk"
	MarkTarget    = "pxeswarm: target"
	MarkTable     = "pxeswarm: table"
	MarkWriting   = "pxeswarm: writing"
	MarkImageDone = "pxeswarm: IMAGE DONE"
	MarkSeeding   = "pxeswarm: seeding"
	// MarkCapturing and MarkCaptureDone take the place of target …
	// IMAGE DONE on a capture plan: the disk read, then the image the
	// server published.
	MarkCapturing   = "pxeswarm: capturing"
	MarkCaptureDone = "pxeswarm: CAPTURE DONE"
	// MarkProgress starts a progress line on a console that is not a
	// terminal (a terminal gets a bar redrawn in place).
	MarkProgress = "pxeswarm: progress"
	MarkError    = "pxeswarm: ERROR"
	MarkReboot   = "pxeswarm: rebooting"
	MarkPowerOff = "pxeswarm: powering off"
	MarkShell    = "pxeswarm: shell"
	// MarkHalt: after an error the agent waits at the console with no
	// shell (on_error=halt); MarkRetry: it starts over after a wait
	// (on_error=retry).
	MarkHalt  = "pxeswarm: halted"
	MarkRetry = "pxeswarm: retrying"
	// MarkNet starts each line of the network dump printed when the
	// network is why the agent gave up.
	MarkNet = "pxeswarm: net"
)

// Where the server URL came from, as MarkLease says it.
const (
	FromDHCP    = "dhcp"    // the DHCP option (lease or proxyDHCP reply)
	FromCmdline = "cmdline" // pxeswarm.server= on the kernel command line
	FromConfig  = "config"  // Config.ServerURL (tests, a machine set up by hand)
)

func markVersion(v string) string { return fmt.Sprintf("%s %s", MarkVersion, v) }

func markStick(s *stick, foundBy, mode string) string {
	n := 0
	if s.cfg != nil {
		n = len(s.cfg.Images)
	}
	return fmt.Sprintf("%s %s esp=%s partuuid=%s found-by=%s mode=%s images=%d", MarkStick, s.disk.Path, orDash(s.esp.Path),
		strings.ToLower(s.esp.GUID), foundBy, mode, n)
}

func markColdplug(n int) string { return fmt.Sprintf("%s %d modules", MarkColdplug, n) }

// markLease: iface and addr are "" when the network was not configured
// by the agent (FromConfig).
func markLease(server, from, iface, addr string) string {
	s := fmt.Sprintf("%s server=%s from=%s", MarkLease, server, from)
	if iface != "" {
		s += " iface=" + iface + " addr=" + addr
	}
	return s
}

func markPlan(task, image string) string {
	return fmt.Sprintf("%s task=%s image=%s", MarkPlan, task, image)
}

func markDisk(d partition.Disk) string {
	yesNo := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	s := fmt.Sprintf("%s %s %s model=%q serial=%s removable=%s table=%s",
		MarkDisk, d.Path, bytesize.Format(d.Size), d.Model, orDash(d.Serial), yesNo(d.Removable), orDash(d.Table))
	if d.Boot != "" {
		s += " boot-medium"
	}
	if d.InUse != "" {
		s += " in-use"
	}
	if d.ReadOnly {
		s += " read-only"
	}
	return s
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

func markTarget(path string, size int64) string {
	return fmt.Sprintf("%s %s (%s)", MarkTarget, path, bytesize.Format(size))
}

func markTable(kind, disk string, parts int) string {
	return fmt.Sprintf("%s %s created on %s (%d partitions)", MarkTable, kind, disk, parts)
}

func markWriting(image string, size int64, dev string) string {
	return fmt.Sprintf("%s %s (%s) to %s", MarkWriting, image, bytesize.Format(size), dev)
}

// markImageDone: sha256 is "" when the image was not read back; the
// info-hash then stands alone (every piece was SHA-1 verified as it
// arrived, but nothing was read back from the disk).
func markImageDone(sha256, infohash string, n int64) string {
	if sha256 == "" {
		return fmt.Sprintf("%s infohash=%s bytes=%d (pieces verified on arrival; not read back)", MarkImageDone, infohash, n)
	}
	return fmt.Sprintf("%s sha256=%s infohash=%s bytes=%d", MarkImageDone, sha256, infohash, n)
}

func markCapturing(path, table string, parts int, send, size int64) string {
	return fmt.Sprintf("%s %s table=%s parts=%d send %s of %s", MarkCapturing, path, orDash(table), parts, bytesize.Format(send), bytesize.Format(size))
}

func markCaptureDone(image, infohash string, sent int64, took time.Duration) string {
	return fmt.Sprintf("%s image=%s infohash=%s bytes=%d took=%s", MarkCaptureDone, image, infohash, sent, took.Round(time.Second))
}

func markSeeding(d string) string { return fmt.Sprintf("%s for %s", MarkSeeding, d) }

// markError is the one line that says what failed and what to do next.
func markError(what, todo string) string {
	what = oneLine(what)
	if todo == "" {
		return fmt.Sprintf("%s %s", MarkError, what)
	}
	return fmt.Sprintf("%s %s — %s", MarkError, what, oneLine(todo))
}

func markShell(path string) string { return fmt.Sprintf("%s %s", MarkShell, path) }

// markHalt says the machine stays here, and what a person does next. do
// is the on_error value that led here (retry, when ctx ended the wait).
func markHalt(do, from string) string {
	return fmt.Sprintf("%s (on_error=%s from %s): the error is above; this machine does nothing more and has no shell: fix the cause, then reset or power-cycle it to try again",
		MarkHalt, do, from)
}

func markRetry(wait time.Duration, attempt int, from string) string {
	return fmt.Sprintf("%s in %s (attempt %d; on_error=retry from %s)", MarkRetry, wait, attempt, from)
}

// oneLine keeps a marker on one line whatever an error text holds.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
