package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cpuLimit is a CPU cgroup that holds one client process to a share of
// one core: the slow-peers scenario's stand-in for terminals that answer
// slowly (make demo's machines under software emulation, weak CPUs). The
// kernel lets the process run for quota every period and stops it for
// the rest, so a request that arrives while it is stopped waits.
// cgroup v2 (cpu.max) when /sys/fs/cgroup is the unified hierarchy,
// else v1's cpu controller (cpu.cfs_quota_us), as on this machine.
type cpuLimit struct{ dir string }

// cpuPeriod is the scheduler period of the limit: 100 ms, the kernel's
// default, so a throttled process can wait up to (1-share)×100 ms.
const cpuPeriod = 100 * time.Millisecond

// newCPULimit makes a cgroup named name that holds what runs in it to
// share (0 < share ≤ 1) of one core.
func newCPULimit(name string, share float64) (*cpuLimit, error) {
	if share <= 0 || share > 1 {
		return nil, fmt.Errorf("CPU share %.3f: want more than 0 and at most 1 (of one core)", share)
	}
	period := cpuPeriod.Microseconds()
	quota := max(int64(share*float64(period)), 1000)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		root := "/sys/fs/cgroup"
		// Best effort: the controller may already be on, and a write
		// fails when it is not available here (then Mkdir's cpu.max
		// write says so).
		os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+cpu"), 0o644)
		l := &cpuLimit{dir: filepath.Join(root, name)}
		if err := os.Mkdir(l.dir, 0o755); err != nil {
			return nil, fmt.Errorf("slow peers need a writable cgroup hierarchy at %s: %w; run as root, or leave the slowpeers scenario out", root, err)
		}
		if err := os.WriteFile(filepath.Join(l.dir, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, period)), 0o644); err != nil {
			l.close()
			return nil, fmt.Errorf("set cpu.max in %s: %w; the cpu controller must be enabled in %s/cgroup.subtree_control", l.dir, err, root)
		}
		return l, nil
	}
	root := "/sys/fs/cgroup/cpu"
	l := &cpuLimit{dir: filepath.Join(root, name)}
	if err := os.Mkdir(l.dir, 0o755); err != nil {
		return nil, fmt.Errorf("slow peers need a cgroup v2 hierarchy at /sys/fs/cgroup or v1's cpu controller at %s: %w; run as root, or leave the slowpeers scenario out", root, err)
	}
	for _, w := range []struct{ file, val string }{{"cpu.cfs_period_us", fmt.Sprint(period)}, {"cpu.cfs_quota_us", fmt.Sprint(quota)}} {
		if err := os.WriteFile(filepath.Join(l.dir, w.file), []byte(w.val), 0o644); err != nil {
			l.close()
			return nil, fmt.Errorf("set %s in %s: %w", w.file, l.dir, err)
		}
	}
	return l, nil
}

// wrap is the command prefix that runs the rest inside the cgroup: a
// shell moves itself in and execs, so every thread the program starts
// is limited from its first instruction.
func (l *cpuLimit) wrap() []string {
	return []string{"sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, l.dir}
}

// throttled is the time the kernel held the cgroup's processes stopped
// so far (v1 throttled_time in ns, v2 throttled_usec).
func (l *cpuLimit) throttled() time.Duration {
	b, err := os.ReadFile(filepath.Join(l.dir, "cpu.stat"))
	if err != nil {
		return 0
	}
	var key string
	var v int64
	for _, line := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscan(line, &key, &v); err != nil {
			continue
		}
		switch key {
		case "throttled_time":
			return time.Duration(v)
		case "throttled_usec":
			return time.Duration(v) * time.Microsecond
		}
	}
	return 0
}

// close removes the cgroup once its processes have gone (bounded: 5 s).
func (l *cpuLimit) close() {
	var err error
	for range 50 {
		if err = os.Remove(l.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "bench: could not remove the cgroup %s (%v); rmdir it\n", l.dir, err)
}
