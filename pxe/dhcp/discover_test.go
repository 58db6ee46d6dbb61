package dhcp

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/pxeswarm/pxeswarm/initramfs/dhclient"
	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestDiscoverFull: Discover against pxeswarm in full mode gets a pool
// address and the URL from the lease itself; Renew renews it by unicast.
func TestDiscoverFull(t *testing.T) {
	netns.Require(t)
	lan := netns.NewLAN(t, "disc", netip.MustParsePrefix("198.18.0.1/24"))
	cfg := Config{
		Mode:      Full,
		Interface: lan.Bridge,
		PoolStart: netip.MustParseAddr("198.18.0.100"),
		PoolEnd:   netip.MustParseAddr("198.18.0.150"),
		Router:    tRouter,
		DNS:       []netip.Addr{tServer},
		LeaseTime: 5 * time.Minute,
		LeaseFile: filepath.Join(t.TempDir(), "leases.json"),
		ServerURL: tURL,
		URLOption: 231,
	}
	srv := startServer(t, lan.NS, cfg)
	agent := lan.AddHost(t, "agent", netip.Prefix{}, netns.MAC(0x31))
	log := testlog.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A long offer window: a Discover that waited it out instead of taking
	// the first offer with the URL would take 20 s, far from any load's
	// noise.
	dcfg := dhclient.Config{Interface: agent.Link, URLOption: 231, Timeout: time.Second, Retries: 3, OfferWindow: 20 * time.Second}

	var d *dhclient.Discovery
	start := time.Now()
	if err := agent.Do(func() (err error) { d, err = dhclient.Discover(ctx, log, dcfg); return err }); err != nil {
		t.Fatalf("Discover = %v", err)
	}
	took := time.Since(start)
	want := &dhclient.Discovery{
		Interface:     agent.Link,
		Addr:          netip.MustParsePrefix("198.18.0.100/24"),
		Router:        tRouter,
		DNS:           []netip.Addr{tServer},
		LeaseTime:     5 * time.Minute,
		ServerIP:      tServer,
		ServerURL:     tURL,
		ServerURLFrom: dhclient.URLFromLease,
	}
	got := *d
	got.ACK = nil
	if diff := cmpDiscovery(want, &got); diff != "" {
		t.Errorf("Discover (-want +got):\n%s", diff)
	}
	if d.ACK == nil || d.ACK.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("Discover ACK = %v, want the raw ACK", d.ACK)
	}
	// The URL was in the lease, so Discover need not wait out OfferWindow.
	if took > 10*time.Second {
		t.Errorf("Discover took %v with the URL in the first offer, want well under the 20s offer window", took)
	}

	// Renew: the agent configures its address, then renews by unicast.
	agent.MustIP("addr", "add", d.Addr.String(), "dev", agent.Link)
	var r *dhclient.Discovery
	if err := agent.Do(func() (err error) { r, err = dhclient.Renew(ctx, log, dcfg, d); return err }); err != nil {
		t.Fatalf("Renew = %v", err)
	}
	if r.Addr != d.Addr || r.ServerURL != tURL || r.LeaseTime != 5*time.Minute {
		t.Errorf("Renew = %v %q %v, want %v %q 5m", r.Addr, r.ServerURL, r.LeaseTime, d.Addr, tURL)
	}
	if n := srv.count("type=ACK mac=52:54:00:00:00:31 yiaddr=198.18.0.100 boot=\"\" arch=65535 to=198.18.0.100:68"); n != 1 {
		t.Errorf("server sent %d unicast ACKs to 198.18.0.100:68 (the renewal), want 1", n)
	}
}

// TestDiscoverNoServer: nobody answers; the error says what to check and
// comes after Timeout×(1+2) for two tries.
func TestDiscoverNoServer(t *testing.T) {
	netns.Require(t)
	lan := netns.NewLAN(t, "empty", netip.Prefix{})
	agent := lan.AddHost(t, "agent", netip.Prefix{}, netns.MAC(0x41))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := agent.Do(func() error {
		_, err := dhclient.Discover(ctx, testlog.New(t), dhclient.Config{Interface: agent.Link, Timeout: 200 * time.Millisecond, Retries: 2})
		return err
	})
	took := time.Since(start)
	if !errors.Is(err, dhclient.ErrNoOffer) || !strings.Contains(err.Error(), "cable") || !strings.Contains(err.Error(), "proxy mode") {
		t.Errorf("Discover with no server = %v, want dhclient.ErrNoOffer naming the cable, the DHCP server and proxy mode", err)
	}
	if took < 500*time.Millisecond || took > 3*time.Second {
		t.Errorf("Discover gave up after %v, want about 600ms (200ms + 400ms)", took)
	}

	// A cancelled context wins over the retries.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	err = agent.Do(func() error {
		_, err := dhclient.Discover(ctx2, nil, dhclient.Config{Interface: agent.Link, Timeout: 5 * time.Second, Retries: 5})
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Discover with an expiring context = %v, want context.DeadlineExceeded", err)
	}

	if _, err := dhclient.Discover(ctx, nil, dhclient.Config{}); !errors.Is(err, dhclient.ErrBadConfig) {
		t.Errorf("Discover without an interface = %v, want dhclient.ErrBadConfig", err)
	}
}

func cmpDiscovery(want, got *dhclient.Discovery) string {
	return cmp.Diff(want, got, cmpopts.IgnoreUnexported(dhclient.Discovery{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }))
}
