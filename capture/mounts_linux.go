package capture

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// mountInfo is the kernel's list of this process's mounts.
const mountInfo = "/proc/self/mountinfo"

// rwMounts lists the read-write mounts of the block device f or of any
// of its partitions ("/dev/sda2 on /home"), matched by major:minor
// (mountinfo field 3) against the device and the partitions sysfs lists
// under it.
func rwMounts(f *os.File) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	devs := []string{dev}
	// /sys/dev/block/MAJ:MIN/<name>/dev for each partition of a disk.
	subs, _ := filepath.Glob(filepath.Join("/sys/dev/block", dev, "*", "dev"))
	for _, p := range subs {
		if b, err := os.ReadFile(p); err == nil {
			devs = append(devs, strings.TrimSpace(string(b)))
		}
	}
	mi, err := os.Open(mountInfo)
	if err != nil {
		return nil, err
	}
	defer mi.Close()
	return parseMountInfo(bufio.NewScanner(mi), devs), nil
}

// parseMountInfo returns "SOURCE on MOUNTPOINT" for each read-write
// mount of one of devs. A line is
// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTS"
// (proc(5)); OPTIONS are the mount's own, "rw" or "ro" first.
func parseMountInfo(sc *bufio.Scanner, devs []string) []string {
	var out []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !slices.Contains(devs, fields[2]) {
			continue
		}
		if !slices.Contains(strings.Split(fields[5], ","), "rw") {
			continue
		}
		source := fields[2]
		if i := slices.Index(fields, "-"); i > 0 && i+2 < len(fields) {
			source = fields[i+2]
		}
		out = append(out, source+" on "+unescape(fields[4]))
	}
	return out
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
