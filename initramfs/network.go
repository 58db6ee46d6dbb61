package initramfs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/initramfs/dhclient"
	"github.com/vishvananda/netlink"
)

// iffRunning is IFF_RUNNING of linux/if.h: the link is up and has a
// carrier (the kernel sets it from netif_carrier_ok and the oper state).
const iffRunning = 0x40

// ethLinks returns the Ethernet links, name order.
func ethLinks() ([]netlink.Link, error) {
	all, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list network links: %w", err)
	}
	var out []netlink.Link
	for _, l := range all {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
			continue
		}
		// A bridge or bond port, or a link this agent does not own, is not
		// a terminal's NIC; veth (tests) and real devices are.
		switch l.Type() {
		case "device", "veth":
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b netlink.Link) int { return strings.Compare(a.Attrs().Name, b.Attrs().Name) })
	return out, nil
}

// lease is a configured network: the link, its lease and its MAC.
type lease struct {
	link netlink.Link
	d    *dhclient.Discovery
	mac  string
}

// dhcp brings the Ethernet links up, waits (bounded) for a carrier, and
// asks DHCP on each link with one, the link with preferMAC first (the one
// iPXE booted from). The first lease wins: its address and default route
// are configured and its name servers written to ResolvConf.
//
// Everything here runs on the calling goroutine's thread, so a test can
// run it inside a network namespace (netns.NS.Do).
func (a *agent) dhcp(ctx context.Context, preferMAC string) (*lease, error) {
	c := a.cfg
	var links []netlink.Link
	deadline := time.Now().Add(c.LinkTimeout)
	for {
		var err error
		if links, err = ethLinks(); err != nil {
			return nil, err
		}
		if len(links) > 0 || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if len(links) == 0 {
		return nil, fmt.Errorf("%w within %s", ErrNoLink, c.LinkTimeout)
	}
	for _, l := range links {
		if err := netlink.LinkSetUp(l); err != nil {
			a.log.Warn("cannot bring link up", "link", l.Attrs().Name, "err", err)
		}
	}
	// Wait for carriers: until the preferred link (or, with none
	// preferred, every link) has one, or CarrierTimeout. Switch ports
	// without portfast can take many seconds after the link comes up.
	var ready []netlink.Link
	deadline = time.Now().Add(c.CarrierTimeout)
	for {
		ready = ready[:0]
		preferredUp, all := false, true
		for _, l := range links {
			fresh, err := netlink.LinkByIndex(l.Attrs().Index)
			if err != nil {
				all = false
				continue
			}
			if fresh.Attrs().RawFlags&iffRunning != 0 {
				ready = append(ready, fresh)
				if fresh.Attrs().HardwareAddr.String() == preferMAC {
					preferredUp = true
				}
			} else {
				all = false
			}
		}
		if preferredUp || all || (time.Now().After(deadline) && len(ready) > 0) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: none of %s has a carrier after %s", ErrNoCarrier, linkNames(links), c.CarrierTimeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(ready, func(x, y netlink.Link) int {
		px, py := x.Attrs().HardwareAddr.String() == preferMAC, y.Attrs().HardwareAddr.String() == preferMAC
		switch {
		case px && !py:
			return -1
		case py && !px:
			return 1
		}
		return 0
	})
	var errs []error
	for _, l := range ready {
		dc := c.DHCP
		dc.Interface = l.Attrs().Name
		d, err := dhclient.Discover(ctx, a.log, dc)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			a.log.Warn("no lease on this link", "link", dc.Interface, "err", err)
			errs = append(errs, err)
			continue
		}
		if err := a.configure(l, d); err != nil {
			return nil, err
		}
		return &lease{link: l, d: d, mac: l.Attrs().HardwareAddr.String()}, nil
	}
	return nil, fmt.Errorf("DHCP: %w", errors.Join(errs...))
}

// configure puts the lease's address and default route on the link and
// writes the name servers.
func (a *agent) configure(l netlink.Link, d *dhclient.Discovery) error {
	name := l.Attrs().Name
	ipn := &net.IPNet{IP: d.Addr.Addr().AsSlice(), Mask: net.CIDRMask(d.Addr.Bits(), 32)}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("configure %s on %s: %w", d.Addr, name, err)
	}
	if d.Router.IsValid() && !d.Router.IsUnspecified() {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: d.Router.AsSlice(), Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
		if !d.Addr.Contains(d.Router) {
			// A router outside the leased subnet (RFC 3442 networks do
			// this): reach it on the link directly.
			r.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s on %s: %w", d.Router, name, err)
		}
	}
	if len(d.DNS) > 0 && a.cfg.ResolvConf != "" {
		var b strings.Builder
		for _, s := range d.DNS {
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
		if err := os.WriteFile(a.cfg.ResolvConf, []byte(b.String()), 0o644); err != nil {
			a.log.Warn("cannot write name servers", "file", a.cfg.ResolvConf, "err", err)
		}
	}
	a.log.Info("network configured", "link", name, "addr", d.Addr, "router", d.Router, "dns", d.DNS, "lease", d.LeaseTime)
	return nil
}

// infiniteLease is DHCP's "forever" (RFC 2132 §9.2: 0xffffffff seconds).
const infiniteLease = time.Duration(0xffffffff) * time.Second

// keepLease renews the lease at T1 (half the lease, RFC 2131 §4.4.5) for
// as long as ctx lives. A failed renewal is retried at half the time left
// (but not more often than every 5 s); if the lease runs out the address
// is kept anyway: the image is still being written, and the server's pool
// outlives a lease.
func (a *agent) keepLease(ctx context.Context, l *lease) {
	d := l.d
	if d.LeaseTime <= 0 || d.LeaseTime >= infiniteLease {
		return
	}
	got := time.Now()
	wait := d.LeaseTime / 2
	for {
		if sleep(ctx, wait) != nil {
			return
		}
		dc := a.cfg.DHCP
		dc.Interface = l.link.Attrs().Name
		nd, err := dhclient.Renew(ctx, a.log, dc, d)
		if err == nil {
			if nd.Addr != d.Addr {
				a.log.Warn("the renewed lease has another address; configuring it", "old", d.Addr, "new", nd.Addr)
				if err := a.configure(l.link, nd); err != nil {
					a.log.Error("cannot configure the renewed address", "err", err)
				}
			}
			d, got, wait = nd, time.Now(), nd.LeaseTime/2
			if nd.LeaseTime <= 0 || nd.LeaseTime >= infiniteLease {
				return
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		left := time.Until(got.Add(d.LeaseTime))
		wait = max(left/2, 5*time.Second)
		if left <= 0 {
			wait = time.Minute
			a.log.Error("the DHCP lease ran out; keeping the address while imaging", "addr", d.Addr, "err", err)
		} else {
			a.log.Warn("lease renewal failed; retrying", "addr", d.Addr, "left", left.Round(time.Second), "err", err)
		}
	}
}

func linkNames(ls []netlink.Link) string {
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return strings.Join(names, ", ")
}

// dumpNetwork prints links, addresses and routes, one MarkNet line each,
// so that a person (or a test log) sees why the network failed. u-root's
// pxeboot does the same before it gives up.
func dumpNetwork(println func(string)) {
	links, err := netlink.LinkList()
	if err != nil {
		println(fmt.Sprintf("%s cannot list links: %v", MarkNet, err))
		return
	}
	if len(links) == 0 {
		println(MarkNet + " no network links at all: is the NIC's driver in the initramfs?")
	}
	for _, l := range links {
		a := l.Attrs()
		carrier := "no-carrier"
		if a.RawFlags&iffRunning != 0 {
			carrier = "carrier"
		}
		println(fmt.Sprintf("%s link %d %s type=%s mac=%s mtu=%d state=%s %s flags=%s",
			MarkNet, a.Index, a.Name, l.Type(), orDash(a.HardwareAddr.String()), a.MTU, a.OperState, carrier, a.Flags))
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			println(fmt.Sprintf("%s   addresses of %s: %v", MarkNet, a.Name, err))
		}
		for _, ad := range addrs {
			println(fmt.Sprintf("%s   addr %s", MarkNet, ad.IPNet))
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		println(fmt.Sprintf("%s cannot list routes: %v", MarkNet, err))
		return
	}
	if len(routes) == 0 {
		println(MarkNet + " no IPv4 routes")
	}
	for _, r := range routes {
		dev := ""
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		dst := "default"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		gw := ""
		if r.Gw != nil {
			gw = " via " + r.Gw.String()
		}
		println(fmt.Sprintf("%s route %s%s dev %s", MarkNet, dst, gw, dev))
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isNetErr reports whether err came from the network (a dial, a DNS
// lookup, a timeout), not from what a server answered.
func isNetErr(err error) bool {
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	return errors.As(err, &oe) || errors.As(err, &de) || (errors.As(err, &ne) && ne.Timeout())
}
