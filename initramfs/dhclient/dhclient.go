// Package dhclient is the agent's DHCPv4 client: it gets a lease on one
// interface, learns the pxeswarm server's URL from the URL option (from
// the address server, or from a proxyDHCP offer beside it) and renews the
// lease. It does not configure the interface (package initramfs does) and
// shares nothing with the server's DHCP (package pxe/dhcp) but the constants
// in package protocol.
package dhclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Errors Discover and Renew return.
var (
	// ErrBadConfig: a Config field is invalid.
	ErrBadConfig = errors.New("bad DHCP client configuration")
	// ErrNoOffer: no DHCP server offered an address in time.
	ErrNoOffer = errors.New("no DHCP offer")
	// ErrOnlyProxy: a proxyDHCP server answered, but nobody offered an
	// address.
	ErrOnlyProxy = errors.New("only proxyDHCP answered")
	// ErrLeaseRefused: the server answered the REQUEST with a NAK (or an
	// ACK without an address).
	ErrLeaseRefused = errors.New("DHCP lease refused")
)

// Where Discovery.ServerURL came from.
const (
	URLFromLease = "lease" // the option was in the address server's reply
	URLFromProxy = "proxy" // the option came from a proxyDHCP offer
)

// Config configures Discover.
type Config struct {
	// Interface is the network interface to ask on (e.g. "eth0"). It must
	// be up; it needs no address.
	Interface string
	// URLOption is the option carrying the server URL; default 224.
	URLOption uint8
	// Timeout is how long the first DISCOVER (and REQUEST) waits for an
	// answer; each retry waits twice as long as the one before. Default 2s.
	Timeout time.Duration
	// Retries is how many times a message is sent; default 4 (2+4+8+16 =
	// 30s at the default Timeout).
	Retries int
	// OfferWindow is how long Discover keeps collecting offers after the
	// first address offer when it still lacks the server URL (a proxyDHCP
	// offer may come a moment later); default 1s.
	OfferWindow time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.Interface == "" {
		return c, fmt.Errorf("%w: Discover needs an interface", ErrBadConfig)
	}
	if c.URLOption == 0 {
		c.URLOption = protocol.URLOption
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Retries <= 0 {
		c.Retries = 4
	}
	if c.OfferWindow <= 0 {
		c.OfferWindow = time.Second
	}
	return c, nil
}

// Discovery is what Discover learnt: a lease and the server URL. The
// interface is not configured; the caller does that.
type Discovery struct {
	// Interface is the interface asked on.
	Interface string
	// Addr is the leased address with the network's prefix length.
	Addr netip.Prefix
	// Router is the default gateway (option 3), if any.
	Router netip.Addr
	// DNS are the name servers (option 6).
	DNS []netip.Addr
	// LeaseTime is the lease's length (option 51).
	LeaseTime time.Duration
	// ServerIP is the DHCP server that granted the lease (option 54).
	ServerIP netip.Addr
	// ServerURL is the pxeswarm server URL, "" if no reply carried it.
	ServerURL string
	// ServerURLFrom is URLFromLease, URLFromProxy or "" (no URL).
	ServerURLFrom string
	// ACK is the server's acknowledgement, as received.
	ACK *dhcpv4.DHCPv4

	offer *dhcpv4.DHCPv4
}

// Discover gets a lease on cfg.Interface with nclient4 and finds the
// server URL. It broadcasts a DISCOVER with vendor class
// AgentVendorClass, collects offers, takes the first with a non-zero
// address (a proxyDHCP offer has yiaddr 0.0.0.0 and is no lease: u-root's
// dhclient wrongly accepts it), completes REQUEST/ACK, and reads the URL
// option from the ACK or that offer, else from a proxyDHCP offer.
func Discover(ctx context.Context, log *slog.Logger, cfg Config) (*Discovery, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	client, err := nclient4.New(cfg.Interface,
		nclient4.WithTimeout(cfg.Timeout),
		nclient4.WithRetry(cfg.Retries),
		nclient4.WithLogger(nclientLogger{log}))
	if err != nil {
		return nil, fmt.Errorf("dhcp client on %s: %w: check the interface exists and is up", cfg.Interface, err)
	}
	defer client.Close()

	mods := discoverModifiers(cfg)
	discover, err := dhcpv4.NewDiscovery(client.InterfaceAddr(), mods...)
	if err != nil {
		return nil, fmt.Errorf("dhcp: build DISCOVER: %w", err)
	}

	// Collect offers. The matcher sees every reply to our DISCOVER: it
	// keeps the first address offer and the first proxy offer with a URL,
	// and stops the wait once it has what it needs, or OfferWindow after
	// the first address offer.
	var leaseOffer, proxyOffer *dhcpv4.DHCPv4
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var window *time.Timer
	defer func() {
		if window != nil {
			window.Stop()
		}
	}()
	match := func(p *dhcpv4.DHCPv4) bool {
		if p.MessageType() != dhcpv4.MessageTypeOffer {
			return false
		}
		yi := addrOf(p.YourIPAddr)
		hasURL := len(p.Options.Get(dhcpv4.GenericOptionCode(cfg.URLOption))) > 0
		log.Debug("dhcp: offer", "from", p.ServerIdentifier(), "yiaddr", p.YourIPAddr, "url", hasURL)
		switch {
		case yi.IsValid() && !yi.IsUnspecified() && leaseOffer == nil:
			leaseOffer = p
			if hasURL || proxyOffer != nil {
				return true
			}
			window = time.AfterFunc(cfg.OfferWindow, stop)
		case (!yi.IsValid() || yi.IsUnspecified()) && hasURL && proxyOffer == nil:
			proxyOffer = p
			return leaseOffer != nil
		}
		return false
	}
	_, err = client.SendAndRead(wctx, nclient4.DefaultServers, discover, match)
	if leaseOffer == nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if proxyOffer != nil {
			return nil, fmt.Errorf("%w on %s: proxyDHCP server %v answered but no DHCP server offered an address: check the school's DHCP server (or run pxeswarm in full mode)", ErrOnlyProxy, cfg.Interface, proxyOffer.ServerIdentifier())
		}
		return nil, fmt.Errorf("%w on %s after %d tries: check the cable and link, that a DHCP server serves this network, and if pxeswarm is in proxy mode that the school's DHCP server is up (%v)", ErrNoOffer, cfg.Interface, cfg.Retries, err)
	}

	lease, err := client.RequestFromOffer(ctx, leaseOffer, mods...)
	if err != nil {
		var nak *nclient4.ErrNak
		if errors.As(err, &nak) {
			return nil, fmt.Errorf("%w: server %v said %q to %v: retry; if it persists, check the DHCP server's pool", ErrLeaseRefused, leaseOffer.ServerIdentifier(), nak.Nak.Message(), leaseOffer.YourIPAddr)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w on %s: no ACK from %v for %v (%v): check the DHCP server", ErrNoOffer, cfg.Interface, leaseOffer.ServerIdentifier(), leaseOffer.YourIPAddr, err)
	}
	d, err := newDiscovery(cfg, leaseOffer, lease.ACK)
	if err != nil {
		return nil, err
	}
	if d.ServerURL == "" && proxyOffer != nil {
		d.ServerURL = string(proxyOffer.Options.Get(dhcpv4.GenericOptionCode(cfg.URLOption)))
		d.ServerURLFrom = URLFromProxy
	}
	log.Info("dhcp: lease", "interface", d.Interface, "addr", d.Addr, "router", d.Router, "server", d.ServerIP,
		"lease", d.LeaseTime, "server_url", d.ServerURL, "url_from", d.ServerURLFrom)
	return d, nil
}

// Renew renews d's lease (RFC 2131 RENEWING: a REQUEST with ciaddr set
// to the leased address, sent to the server that granted it). The
// address must already be configured on the interface, as the server
// answers by unicast. The returned Discovery keeps d's server URL if the
// new ACK does not carry one.
func Renew(ctx context.Context, log *slog.Logger, cfg Config, d *Discovery) (*Discovery, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if d == nil || d.ACK == nil || d.offer == nil {
		return nil, fmt.Errorf("%w: Renew needs a Discovery from Discover", ErrBadConfig)
	}
	// A RENEWING client sends from its own address (RFC 2131 §4.3.2), so
	// this uses an ordinary UDP socket on it, not nclient4's raw socket:
	// that one sends from 0.0.0.0, and a kernel drops a unicast from
	// 0.0.0.0 as a martian.
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(d.Addr.Addr(), clientPort)))
	if err != nil {
		return nil, fmt.Errorf("dhcp: renew from %v: %w: is the address configured on %s?", d.Addr.Addr(), err, cfg.Interface)
	}
	client, err := nclient4.NewWithConn(conn, d.ACK.ClientHWAddr,
		nclient4.WithTimeout(cfg.Timeout),
		nclient4.WithRetry(cfg.Retries),
		nclient4.WithServerAddr(&net.UDPAddr{IP: d.ServerIP.AsSlice(), Port: serverPort}),
		nclient4.WithLogger(nclientLogger{log}))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dhcp client on %s: %w", cfg.Interface, err)
	}
	defer client.Close()
	lease, err := client.Renew(ctx, &nclient4.Lease{Offer: d.offer, ACK: d.ACK}, discoverModifiers(cfg)...)
	if err != nil {
		var nak *nclient4.ErrNak
		if errors.As(err, &nak) {
			return nil, fmt.Errorf("%w: server %v refused to renew %v (%q): start over with Discover", ErrLeaseRefused, d.ServerIP, d.Addr, nak.Nak.Message())
		}
		return nil, fmt.Errorf("dhcp: renew %v with %v: %w", d.Addr, d.ServerIP, err)
	}
	nd, err := newDiscovery(cfg, d.offer, lease.ACK)
	if err != nil {
		return nil, err
	}
	if nd.ServerURL == "" {
		nd.ServerURL, nd.ServerURLFrom = d.ServerURL, d.ServerURLFrom
	}
	log.Info("dhcp: renewed", "addr", nd.Addr, "lease", nd.LeaseTime)
	return nd, nil
}

// discoverModifiers are the options every agent message carries.
func discoverModifiers(cfg Config) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(protocol.AgentVendorClass)),
		dhcpv4.WithRequestedOptions(
			dhcpv4.OptionSubnetMask,
			dhcpv4.OptionRouter,
			dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionIPAddressLeaseTime,
			dhcpv4.OptionServerIdentifier,
			dhcpv4.GenericOptionCode(cfg.URLOption),
		),
	}
}

func newDiscovery(cfg Config, offer, ack *dhcpv4.DHCPv4) (*Discovery, error) {
	ip := addrOf(ack.YourIPAddr)
	if !ip.IsValid() || ip.IsUnspecified() {
		return nil, fmt.Errorf("%w: server %v acknowledged without an address: is it a proxyDHCP server? check the school's DHCP server", ErrLeaseRefused, ack.ServerIdentifier())
	}
	d := &Discovery{
		Interface: cfg.Interface,
		LeaseTime: ack.IPAddressLeaseTime(0),
		ServerIP:  addrOf(ack.ServerIdentifier()),
		ACK:       ack,
		offer:     offer,
	}
	if !d.ServerIP.IsValid() {
		d.ServerIP = addrOf(offer.ServerIdentifier())
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = offer.SubnetMask()
	}
	bits, size := net.IPMask(mask).Size()
	if mask == nil || size != 32 {
		// No (valid) mask: the classful default, as dhclient-script does.
		bits = 24
		if b := ip.As4(); b[0] < 128 {
			bits = 8
		} else if b[0] < 192 {
			bits = 16
		}
	}
	d.Addr = netip.PrefixFrom(ip, bits)
	if rs := ack.Router(); len(rs) > 0 {
		d.Router = addrOf(rs[0])
	}
	for _, s := range ack.DNS() {
		if a := addrOf(s); a.IsValid() {
			d.DNS = append(d.DNS, a)
		}
	}
	code := dhcpv4.GenericOptionCode(cfg.URLOption)
	if u := ack.Options.Get(code); len(u) > 0 {
		d.ServerURL, d.ServerURLFrom = string(u), URLFromLease
	} else if u := offer.Options.Get(code); len(u) > 0 {
		d.ServerURL, d.ServerURLFrom = string(u), URLFromLease
	}
	return d, nil
}

// nclientLogger sends nclient4's messages to slog at debug.
type nclientLogger struct{ log *slog.Logger }

func (l nclientLogger) Printf(format string, v ...any) {
	l.log.Debug("dhcp client: " + fmt.Sprintf(format, v...))
}

func (l nclientLogger) PrintMessage(prefix string, m *dhcpv4.DHCPv4) {
	l.log.Debug("dhcp client: "+prefix, "type", m.MessageType().String(), "xid", m.TransactionID.String(), "yiaddr", m.YourIPAddr, "server", m.ServerIdentifier())
}

// RFC 2131's ports.
const (
	serverPort = 67
	clientPort = 68
)

// addrOf is ip as an IPv4 netip.Addr; the zero Addr if it is not one.
func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Addr{}
	}
	return a
}
