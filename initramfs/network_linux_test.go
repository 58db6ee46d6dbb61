package initramfs

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/initramfs/dhclient"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

const lanURL = "http://198.18.0.1:8080"

// startDnsmasq runs dnsmasq as the LAN's DHCP server (the school's
// server, a reference implementation) on the bridge, with extra options.
func startDnsmasq(t *testing.T, lan *netns.LAN, extra ...string) *testlog.Buffer {
	t.Helper()
	needs.Tool(t, "dnsmasq")
	dir := t.TempDir()
	args := append([]string{"--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=" + lan.Bridge, "--bind-interfaces",
		"--dhcp-authoritative", "--dhcp-range=198.18.0.100,198.18.0.150,255.255.255.0,2m",
		"--dhcp-option=3,198.18.0.1", "--dhcp-option=6,198.18.0.1",
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--user=root", "--log-dhcp", "--log-facility=-"}, extra...)
	cmd := lan.NS.Command(context.Background(), "dnsmasq", args...)
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	netns.Start(t, cmd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dnsmasq output:\n%s", out)
		}
	})
	if !waitFor(5*time.Second, func() bool { return strings.Contains(out.String(), "DHCP, IP range") }) {
		t.Fatalf("dnsmasq did not start:\n%s", out)
	}
	return out
}

func waitFor(d time.Duration, f func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f() {
			return true
		}
	}
	return f()
}

// netAgent is an agent as Run makes it, for calling its network step
// directly inside a namespace.
func netAgent(t *testing.T, cmdline Cmdline) (*agent, *testlog.Buffer) {
	t.Helper()
	con := &testlog.Buffer{}
	cfg := Config{
		// 1+2+4 s: dnsmasq pings an address (up to 3 s) before it offers
		// it; on a loaded host 0.5+1+2 s once missed the offer.
		DHCP:           dhclient.Config{Timeout: time.Second, Retries: 3},
		ResolvConf:     filepath.Join(t.TempDir(), "resolv.conf"),
		LinkTimeout:    2 * time.Second,
		CarrierTimeout: 5 * time.Second,
	}.withDefaults()
	return &agent{cfg: cfg, log: infoLogger(t), con: console(con), cmd: cmdline}, con
}

// TestNetworkDHCP: the agent's network step against dnsmasq: a lease on
// eth0, the address and default route configured over netlink, the name
// server written, the server URL from the DHCP option (it wins over the
// kernel command line), then a renewal at T1.
func TestNetworkDHCP(t *testing.T) {
	netns.Require(t)
	lan := netns.NewLAN(t, "agt", netip.MustParsePrefix("198.18.0.1/24"))
	dm := startDnsmasq(t, lan, "--dhcp-option=224,"+lanURL)
	host := lan.AddHost(t, "term", netip.Prefix{}, netns.MAC(0x51))
	a, _ := netAgent(t, Cmdline{Server: "http://198.18.0.9:1"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var server, from, mac string
	var l *lease
	if err := host.Do(func() (err error) { server, from, mac, l, err = a.network(ctx); return err }); err != nil {
		t.Fatalf("network() = %v", err)
	}
	if server != lanURL || from != FromDHCP || mac != "52:54:00:00:00:51" {
		t.Errorf("network() = %q from %q mac %q, want %q from dhcp mac 52:54:00:00:00:51", server, from, mac, lanURL)
	}
	addr := l.d.Addr
	if b := addr.Addr().As4(); !netip.MustParsePrefix("198.18.0.0/24").Contains(addr.Addr()) || b[3] < 100 || b[3] > 150 || addr.Bits() != 24 || l.d.LeaseTime != 2*time.Minute {
		t.Errorf("lease %v for %v, want an address from 198.18.0.100-150 /24 for 2m", addr, l.d.LeaseTime)
	}
	if out := host.MustIP("-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, "inet "+addr.String()) {
		t.Errorf("eth0 after network():\n%s\nwant inet %s", out, addr)
	}
	if out := host.MustIP("-4", "route", "show"); !strings.Contains(out, "default via 198.18.0.1 dev eth0") {
		t.Errorf("routes after network():\n%s\nwant the default route via 198.18.0.1", out)
	}
	if b, err := os.ReadFile(a.cfg.ResolvConf); err != nil || string(b) != "nameserver 198.18.0.1\n" {
		t.Errorf("resolv.conf = %q, %v; want nameserver 198.18.0.1", b, err)
	}
	// The network works: the bridge answers a ping from the new address.
	needs.Tool(t, "busybox")
	if out, err := host.Run(10*time.Second, "busybox", "ping", "-c", "1", "-W", "2", "198.18.0.1"); err != nil {
		t.Errorf("ping the LAN after network(): %v\n%s", err, out)
	}

	// Renewal at T1: pretend the lease is 2 s, so T1 comes after 1 s.
	acks := func() int { return strings.Count(dm.String(), "DHCPACK(br0) "+addr.Addr().String()) }
	if acks() != 1 {
		t.Fatalf("dnsmasq sent %d ACKs for %v, want 1 before the renewal", acks(), addr.Addr())
	}
	l.d.LeaseTime = 2 * time.Second
	rctx, rcancel := context.WithCancel(ctx)
	go func() {
		waitFor(10*time.Second, func() bool { return acks() >= 2 })
		rcancel()
	}()
	start := time.Now()
	host.Do(func() error { a.keepLease(rctx, l); return nil })
	if n := acks(); n != 2 {
		t.Errorf("dnsmasq sent %d ACKs for %v, want 2 (the lease and one renewal)", n, addr.Addr())
	}
	if took := time.Since(start); took < 900*time.Millisecond || took > 5*time.Second {
		t.Errorf("renewal came after %v, want about 1s (T1 of a 2s lease)", took)
	}
}

// TestNetworkURLFromCmdline: DHCP without the URL option; the kernel
// command line names the server.
func TestNetworkURLFromCmdline(t *testing.T) {
	netns.Require(t)
	lan := netns.NewLAN(t, "agc", netip.MustParsePrefix("198.18.0.1/24"))
	startDnsmasq(t, lan)
	host := lan.AddHost(t, "term", netip.Prefix{}, netns.MAC(0x52))
	a, _ := netAgent(t, Cmdline{Server: lanURL, MAC: "52:54:00:00:00:99"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var server, from, mac string
	if err := host.Do(func() (err error) { server, from, mac, _, err = a.network(ctx); return err }); err != nil {
		t.Fatalf("network() = %v", err)
	}
	// The MAC iPXE booted from (pxeswarm.mac) names the plan, even when
	// the lease came on another link.
	if server != lanURL || from != FromCmdline || mac != "52:54:00:00:00:99" {
		t.Errorf("network() = %q from %q mac %q, want %q from cmdline, mac from the command line", server, from, mac, lanURL)
	}

	// Without the command line either, nothing names the server.
	b, _ := netAgent(t, Cmdline{})
	err := host.Do(func() error { _, _, _, _, err := b.network(ctx); return err })
	var ae *Error
	if !errors.Is(err, ErrNoServer) || !errors.As(err, &ae) || !ae.Network || !strings.Contains(ae.Do, "pxeswarm.server=") {
		t.Errorf("network() with no URL anywhere = %v, want ErrNoServer, a network error, saying pxeswarm.server=", err)
	}
}

// TestRunNoDHCP: no DHCP server answers (a pulled cable): Run prints the
// ERROR line, dumps links, addresses and routes, and, with no verified
// plan, starts over after a wait (the default on_error), never at a
// shell; stopped while waiting, it halts. Run is called on the
// namespace's thread: before the network is up it starts no goroutine
// that would need the namespace.
func TestRunNoDHCP(t *testing.T) {
	netns.Require(t)
	lan := netns.NewLAN(t, "agn", netip.Prefix{})
	host := lan.AddHost(t, "term", netip.Prefix{}, netns.MAC(0x53))
	con := &testlog.Buffer{}
	var shells []string
	halts := 0
	cfg := Config{
		Cmdline:        "-",
		KeyPath:        "/nonexistent",
		DHCP:           dhclient.Config{Timeout: 200 * time.Millisecond, Retries: 2},
		ResolvConf:     filepath.Join(t.TempDir(), "resolv.conf"),
		LinkTimeout:    time.Second,
		CarrierTimeout: 2 * time.Second,
		Console:        con,
		StartShell:     func(ctx context.Context, path string) error { shells = append(shells, path); return nil },
		Reboot:         func(int) error { t.Error("Reboot called"); return nil },
		Halt:           func() { halts++ },
		RetryWait:      10 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		// Stop once the agent has started over twice.
		for ctx.Err() == nil && strings.Count(con.String(), MarkRetry) < 2 {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	err := host.Do(func() error { return cfg.Run(ctx, infoLogger(t)) })
	t.Logf("console:\n%s", con)
	if err == nil {
		t.Errorf("Run = nil, want an error")
	}
	r := &run{console: con}
	r.wantMarkers(t, MarkVersion, MarkError+" no network", MarkNet+" link 1 lo", MarkNet+" link 2 eth0 type=veth mac=52:54:00:00:00:53", MarkNet+" no IPv4 routes",
		MarkRetry+" in 10ms (attempt 2; on_error=retry from default)", MarkVersion, MarkError+" no network", MarkRetry+" in 20ms (attempt 3", MarkHalt)
	if l := r.line(MarkError); !strings.Contains(l, "check the cable") || !strings.Contains(l, dhclient.ErrNoOffer.Error()) {
		t.Errorf("ERROR line %q, want no DHCP offer and advice on cable, driver and DHCP server", l)
	}
	if len(shells) != 0 || halts != 1 {
		t.Errorf("shell hook called %d times, halt %d times; want no shell, one halt", len(shells), halts)
	}
}
