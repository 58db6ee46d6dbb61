package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestCPULimit: a busy loop run through the limit's wrap gets no more
// than its share of a core, and the cgroup reports the time it was held.
// Without the limit (or with the process left outside the cgroup) the
// loop takes what the scheduler gives it and nothing is throttled.
func TestCPULimit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a cgroup")
	}
	const share = 0.05
	l, err := newCPULimit(fmt.Sprintf("pxeswarm-bench-test-%d", os.Getpid()), share)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	w := l.wrap()
	cmd := exec.Command(w[0], append(w[1:], "sh", "-c", "while :; do :; done")...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const wall = 1500 * time.Millisecond
	time.Sleep(wall)
	used := cpuTime(t, cmd.Process.Pid)
	cmd.Process.Kill()
	cmd.Wait()
	if limit := time.Duration(share*1.5*float64(wall)) + 20*time.Millisecond; used > limit {
		t.Errorf("busy loop in a %.0f%% cgroup used %s of CPU in %s, want at most %s", 100*share, used, wall, limit)
	}
	if th := l.throttled(); th <= 0 {
		t.Errorf("cgroup %s reports %s throttled after %s of a busy loop, want more than 0", l.dir, th, wall)
	}
}

// cpuTime is a process's user and system time from /proc/PID/stat.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's closing parenthesis: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 Hz).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
