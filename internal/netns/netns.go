// Package netns builds throwaway network namespaces for tests: a LAN
// namespace holding a bridge (with an address, for the server under test),
// "hosts" each in their own namespace joined to the bridge by a veth pair,
// and tap devices on the bridge for QEMU machines. Everything a test
// creates is removed by t.Cleanup, also when the test fails.
//
// It owns only the plumbing. Tests must use addresses from 198.18.0.0/15
// (RFC 2544 benchmarking space) and nothing else; NewLAN and AddHost
// refuse others. It needs root and the ip(8) tool; without them the test is
// skipped with the reason.
//
// Names include the test process's PID, so parallel test binaries (and
// other helpers' tests) do not clash.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/needs"

	"golang.org/x/sys/unix"
)

// TestNet returns the only address space tests may use (RFC 2544).
func TestNet() netip.Prefix { return netip.MustParsePrefix("198.18.0.0/15") }

// NS is one network namespace created for a test.
type NS struct {
	// Name is the namespace's name under /run/netns.
	Name string
	t    testing.TB
}

// Require skips t unless it runs as root with ip(8) available.
func Require(t testing.TB) {
	t.Helper()
	needs.Root(t, "ip netns")
	needs.Tool(t, "ip")
}

// New creates a namespace named "pxs<pid>-<tag>-<random>", with its
// loopback up. It is deleted when the test ends. The first call in a test
// process also removes namespaces left by test processes that no longer
// run (sweepStale).
func New(t testing.TB, tag string) *NS {
	t.Helper()
	Require(t)
	sweepOnce.Do(func() {
		for _, name := range sweepStale() {
			t.Logf("netns: removed %s, left by a test process that no longer runs", name)
		}
	})
	var r [4]byte
	rand.Read(r[:])
	name := fmt.Sprintf("pxs%d-%s-%x", os.Getpid(), tag, r)
	if err := run("ip", "netns", "add", name); err != nil {
		t.Fatalf("netns: %v", err)
	}
	n := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if err := run("ip", "netns", "del", name); err != nil {
			t.Errorf("netns: cleanup: %v", err)
		}
	})
	n.MustIP("link", "set", "lo", "up")
	return n
}

var sweepOnce sync.Once

// sweepStale deletes the namespaces named "pxs<pid>-…" whose test process
// (pid) no longer exists, such as those of an interrupted run, and returns
// their names. Namespaces of running processes, this one's included, are
// left alone. Deleting a name does not stop what still runs inside.
func sweepStale() []string {
	ents, _ := os.ReadDir("/run/netns")
	var gone []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "pxs")
		digits, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(digits)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if unix.Kill(pid, 0) != unix.ESRCH {
			continue // running (or not ours to judge)
		}
		if run("ip", "netns", "del", e.Name()) == nil {
			gone = append(gone, e.Name())
		}
	}
	return gone
}

// IP runs `ip -n NS args...` and returns its output.
func (n *NS) IP(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustIP is IP that fails the test on error.
func (n *NS) MustIP(args ...string) string {
	n.t.Helper()
	out, err := n.IP(args...)
	if err != nil {
		n.t.Fatalf("netns: %v", err)
	}
	return out
}

// Command returns a command that runs name inside the namespace
// (`ip netns exec NS name args...`). ip execs the program in place, so
// cmd.Process.Pid is the program's own PID, and it is killed if the test
// process dies first (a server or dnsmasq must not outlive an interrupted
// run).
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Run runs name inside the namespace, bounded by timeout, and returns its
// combined output.
func (n *NS) Run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), n.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Start starts cmd (usually from Command) and makes sure it is gone when
// the test ends: SIGTERM, then SIGKILL after two seconds, always waited
// for. It returns a channel that yields Wait's result once.
func Start(t testing.TB, cmd *exec.Cmd) <-chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("netns: start %s: %v", cmd, err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			_ = cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				t.Errorf("netns: %s (pid %d) did not exit after SIGKILL", cmd.Path, cmd.Process.Pid)
			}
		}
	})
	return done
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn
// opens stay in the namespace afterwards, whatever thread later uses
// them; goroutines fn starts do not inherit the namespace, so fn must do
// every namespace-dependent call (socket creation, interface lookups)
// itself. If the thread cannot be switched back it is discarded.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open %s: %w", n.Name, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else: the goroutine ends locked, so Go retires the thread.
		errc <- ferr
	}()
	return <-errc
}

// LAN is a namespace with a bridge: the switch of a test network. The
// server under test usually runs in LAN.NS bound to LAN.Bridge.
type LAN struct {
	// NS holds the bridge, its ports and (if given) its address.
	NS *NS
	// Bridge is the bridge's name inside NS ("br0").
	Bridge string
	// Addr is the bridge's address, if New was given one.
	Addr  netip.Prefix
	ports int
}

// NewLAN creates a namespace with bridge "br0", up, holding addr (skip
// the address with netip.Prefix{}). addr must lie in 198.18.0.0/15.
func NewLAN(t testing.TB, tag string, addr netip.Prefix) *LAN {
	t.Helper()
	checkAddr(t, addr)
	n := New(t, tag)
	l := &LAN{NS: n, Bridge: "br0", Addr: addr}
	n.MustIP("link", "add", l.Bridge, "type", "bridge", "forward_delay", "0")
	// No STP and no multicast snooping: a test LAN is one flat segment.
	n.MustIP("link", "set", l.Bridge, "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
	if addr.IsValid() {
		n.MustIP("addr", "add", addr.String(), "brd", "+", "dev", l.Bridge)
	}
	n.MustIP("link", "set", l.Bridge, "up")
	return l
}

// Host is a machine on a LAN: its own namespace with one interface.
type Host struct {
	*NS
	// Link is the interface's name inside the host's namespace ("eth0").
	Link string
	// MAC is the interface's hardware address.
	MAC net.HardwareAddr
	// Port is the veth end on the bridge, in the LAN's namespace.
	Port string
}

// AddHost creates a host namespace joined to the bridge by a veth pair.
// Its interface is "eth0", up, with the given MAC (nil: random) and
// address (netip.Prefix{}: none, for DHCP clients).
func (l *LAN) AddHost(t testing.TB, tag string, addr netip.Prefix, mac net.HardwareAddr) *Host {
	t.Helper()
	checkAddr(t, addr)
	n := New(t, tag)
	l.ports++
	port := fmt.Sprintf("v%d", l.ports)
	// Both ends are created straight in their namespaces, so the names
	// only have to be unique there.
	if err := run("ip", "link", "add", "eth0", "netns", n.Name, "type", "veth", "peer", "name", port, "netns", l.NS.Name); err != nil {
		t.Fatalf("netns: %v", err)
	}
	if mac != nil {
		n.MustIP("link", "set", "eth0", "address", mac.String())
	}
	l.NS.MustIP("link", "set", port, "master", l.Bridge)
	l.NS.MustIP("link", "set", port, "up")
	if addr.IsValid() {
		n.MustIP("addr", "add", addr.String(), "brd", "+", "dev", "eth0")
	}
	n.MustIP("link", "set", "eth0", "up")
	h := &Host{NS: n, Link: "eth0", Port: port}
	h.MAC = mac
	if h.MAC == nil {
		err := n.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			h.MAC = ifi.HardwareAddr
			return nil
		})
		if err != nil {
			t.Fatalf("netns: read MAC of %s: %v", n.Name, err)
		}
	}
	return h
}

// AddTap creates a tap device on the bridge, in the LAN's namespace, for
// a QEMU machine started in that namespace (-netdev tap,ifname=NAME,
// script=no,downscript=no). It returns the tap's name.
func (l *LAN) AddTap(t testing.TB) string {
	t.Helper()
	l.ports++
	name := fmt.Sprintf("tap%d", l.ports)
	l.NS.MustIP("tuntap", "add", "dev", name, "mode", "tap")
	l.NS.MustIP("link", "set", name, "master", l.Bridge)
	l.NS.MustIP("link", "set", name, "up")
	return name
}

// MAC returns a locally administered unicast MAC, 52:54:00:xx:yy:zz
// (QEMU's prefix) with the low bytes from n, for tests that want fixed
// addresses.
func MAC(n int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, byte(n >> 16), byte(n >> 8), byte(n)}
}

func checkAddr(t testing.TB, addr netip.Prefix) {
	t.Helper()
	if addr.IsValid() && !TestNet().Contains(addr.Addr()) {
		t.Fatalf("netns: address %s is outside %s: tests may only use the benchmarking range", addr, TestNet())
	}
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return nil
}
