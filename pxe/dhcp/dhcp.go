package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Mode says what the DHCP service does on the classroom network.
type Mode string

const (
	// Off serves nothing: another server does everything (the site's
	// DHCP server points PXE clients at us itself). The zero Mode is off,
	// so a DHCP server never starts by accident.
	Off Mode = "off"
	// Full hands out addresses from a pool (a network of our own) and
	// tells PXE clients what to boot.
	Full Mode = "full"
	// Proxy is PXE 2.1 proxyDHCP beside the school's DHCP server:
	// never an address, only the boot file and the server URL.
	Proxy Mode = "proxy"
)

// ParseMode checks a mode name ("full", "proxy" or "off").
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Full, Proxy, Off:
		return m, nil
	}
	return "", fmt.Errorf("%w: DHCP mode %q: want full (our own address pool), proxy (beside the school's DHCP server) or off", ErrBadConfig, s)
}

func (m Mode) String() string { return string(m) }

// Set implements flag.Value, so a bad mode fails when the flag is parsed.
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// UnmarshalText checks the mode when read from a config file.
func (m *Mode) UnmarshalText(b []byte) error { return m.Set(string(b)) }

// Errors callers can branch on.
var (
	// ErrBadConfig: a Config field is invalid.
	ErrBadConfig = errors.New("bad DHCP configuration")
	// ErrLeaseFile: the lease file cannot be read or is corrupt.
	ErrLeaseFile = errors.New("bad DHCP lease file")
)

// Defaults for Config.
const (
	// DefaultURLOption carries the server URL: the one the agent reads.
	DefaultURLOption = protocol.URLOption
	// DefaultBootFileBIOS is iPXE for legacy BIOS PXE ROMs (Debian ipxe).
	DefaultBootFileBIOS = "undionly.kpxe"
	// DefaultBootFileUEFI is iPXE for x86-64 UEFI (Debian ipxe). snponly.efi
	// (which uses the firmware's own NIC driver) is the usual alternative.
	DefaultBootFileUEFI = "ipxe.efi"
	// DefaultLeaseTime is how long a full-mode lease lasts.
	DefaultLeaseTime = time.Hour
	// PXEPort is the PXE 2.1 boot server port: after the address, PXE
	// firmware and iPXE ask the proxyDHCP server again here.
	PXEPort = 4011
	// serverPort and clientPort are RFC 2131's ports.
	serverPort = 67
	clientPort = 68
)

// Config configures the DHCP service. The zero value is off.
type Config struct {
	// Mode is full, proxy or off ("" is off).
	Mode Mode
	// Interface is the classroom network interface (e.g. "eth1"). The
	// sockets are bound to it (SO_BINDTODEVICE) so nothing is answered on
	// other networks, and broadcast replies leave through it. Required
	// unless Mode is off.
	Interface string
	// ServerIP is our address on Interface: the server identifier (option
	// 54), siaddr (next-server) and option 66 (TFTP server). Default: the
	// first IPv4 address of Interface.
	ServerIP netip.Addr
	// PrefixLen is the network's prefix length (24 for 255.255.255.0),
	// sent as the subnet mask in full mode. Default: the prefix of
	// ServerIP's address on Interface.
	PrefixLen int

	// PoolStart and PoolEnd (full mode) bound the addresses handed out,
	// both inclusive, inside ServerIP's network. ServerIP, Router and
	// reserved addresses inside the range are skipped.
	PoolStart, PoolEnd netip.Addr
	// Router (full mode, optional) is the default gateway, option 3.
	Router netip.Addr
	// DNS (full mode, optional) are the name servers, option 6.
	DNS []netip.Addr
	// LeaseTime (full mode) is how long a lease lasts; default 1h, at
	// least 30s.
	LeaseTime time.Duration
	// LeaseFile (full mode) keeps leases across restarts, so a machine
	// gets the same address back. Each change is appended (and fsynced)
	// to a journal beside it, LeaseFile + ".journal", before the reply is
	// sent; the file itself is replaced atomically (temporary file, fsync,
	// rename) with every lease only now and then: at start, at a clean
	// stop, and when the journal has grown to twice the leases. Both are
	// read at start; a corrupt one stops Start with ErrLeaseFile. Empty:
	// leases live in memory.
	LeaseFile string
	// PoolReserve (full mode) is how many free pool addresses are kept
	// for the machines Priority names: a client it does not name gets a
	// new address only while more than PoolReserve are free. Client MACs
	// are easy to make up, so without a reserve a few made-up clients can
	// take every address a terminal needs. 0: a tenth of the pool, at
	// least 1 (none for a one-address pool). Used only with Priority.
	PoolReserve int
	// Reservations (full mode, optional) pins addresses: MAC
	// ("52:54:00:12:34:56") → address in the network, inside or outside
	// the pool. A reserved address is never given to another machine.
	Reservations map[string]netip.Addr

	// BootFileBIOS is the boot file for legacy BIOS PXE (client
	// architecture 0); default "undionly.kpxe".
	BootFileBIOS string
	// BootFileUEFI is the boot file for x86-64 UEFI (architectures 7 and
	// 9); default "ipxe.efi" ("snponly.efi" also works; "shimx64.efi" is
	// the signed Secure Boot chain, see pxe.LoaderShim).
	BootFileUEFI string
	// HTTPBootURL is the loader's URL for x86-64 UEFI HTTP boot clients
	// (architecture 16, vendor class "HTTPClient"), e.g.
	// "http://198.18.0.1:8080/boot/shimx64.efi". The reply carries it as
	// the boot file and echoes vendor class "HTTPClient", without which
	// the firmware ignores the offer (UEFI 2.5 §24.7.2). Empty: HTTP
	// boot clients get an address only (full) or no reply (proxy).
	HTTPBootURL string
	// ScriptURL is what iPXE (user class "iPXE") is told to boot instead of
	// a binary, so it does not load itself again. "{mac}" is replaced by
	// the client's MAC in lower case with hyphens (52-54-00-12-34-56).
	// Default: ServerURL + "boot/{mac}.ipxe".
	ScriptURL string
	// URLOption is the DHCP option that carries ServerURL; default 224,
	// must be a site-specific option (224–254).
	URLOption uint8
	// ServerURL is the pxeswarm server's base URL (e.g.
	// "http://198.18.0.1:8080/"), sent in option URLOption in every
	// full-mode OFFER and ACK and in every proxy reply. Empty: not sent.
	ServerURL string

	// Boot, if set, says whether a machine should network-boot now (the
	// server has an active task for it). When it says no, PXE firmware and
	// iPXE get no boot file: in full mode the reply carries the address
	// only, in proxy mode there is no reply. The firmware then goes on to
	// its next boot device, the local disk, without loading iPXE at all.
	// (iPXE's own "exit" back to UEFI firmware is not reliable: Debian's
	// iPXE 1.0.0+git-20190125 under OVMF never reached the disk.) Nil: every
	// PXE client gets iPXE and the iPXE script decides. It is called with
	// the handler's lock held, so every reply waits for it: keep it quick.
	Boot func(mac net.HardwareAddr) bool `json:"-" toml:"-"`
	// OnBoot, if set, is called after each OFFER or ACK that carried a
	// boot file to a PXE client (firmware or iPXE): the MAC, its client
	// architecture (option 93; 0xffff if it sent none) and the address it
	// was given (full mode), its own address (proxy requests on port
	// 4011) or the zero Addr (proxy offers). One boot calls it several
	// times (OFFER and ACK, then again from iPXE). It runs on the serving
	// goroutine, outside any lock: keep it short.
	OnBoot func(mac net.HardwareAddr, arch uint16, ip netip.Addr) `json:"-" toml:"-"`
	// Seen, if set, is called for each DISCOVER and REQUEST of a PXE
	// client (firmware or iPXE) or of our agent (vendor class
	// "pxeswarm…"), before the reply is built (and before Boot), with its
	// MAC, client architecture (0xffff if it sent none) and whether it is
	// our agent (Boot is not asked for an agent). What DHCP sees
	// is how the server learns which machines exist: an HTTP request can
	// name any MAC. It is called with the handler's lock held: keep it
	// quick.
	Seen func(mac net.HardwareAddr, arch uint16, agent bool) `json:"-" toml:"-"`
	// Priority, if set, says whether a machine should get an address even
	// when the pool is down to PoolReserve (full mode): say, one with a
	// task or one the site lists. It is called with the handler's lock
	// held, for DISCOVERs and for REQUESTs of an address the client does
	// not hold: keep it quick. Nil: no reserve.
	Priority func(mac net.HardwareAddr) bool `json:"-" toml:"-"`
}

// maxPool bounds the pool (a /15 holds 131072 addresses): picking an
// address walks it.
const maxPool = 1 << 17

// withDefaults validates c and fills in defaults. It needs ServerIP and
// PrefixLen (Start takes them from Interface first).
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, args...)...)
	}
	if c.Mode == "" {
		c.Mode = Off
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return c, err
	}
	if c.Mode == Off {
		return c, nil
	}
	if !c.ServerIP.Is4() {
		return bad("server address %v is not IPv4: set ServerIP to our IPv4 address on %q", c.ServerIP, c.Interface)
	}
	if c.URLOption == 0 {
		c.URLOption = DefaultURLOption
	}
	if c.URLOption < 224 || c.URLOption > 254 {
		return bad("URL option %d is not site-specific: pick one of 224–254 (RFC 3942)", c.URLOption)
	}
	if c.ServerURL != "" {
		u, err := url.Parse(c.ServerURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("server URL %q: want http://host:port/", c.ServerURL)
		}
		if len(c.ServerURL) > 255 {
			return bad("server URL is %d bytes: one DHCP option holds 255", len(c.ServerURL))
		}
	}
	if c.BootFileBIOS == "" {
		c.BootFileBIOS = DefaultBootFileBIOS
	}
	if c.BootFileUEFI == "" {
		c.BootFileUEFI = DefaultBootFileUEFI
	}
	for _, f := range []string{c.BootFileBIOS, c.BootFileUEFI} {
		// The BOOTP file field holds 128 bytes with its NUL; PXE ROMs read
		// only that field.
		if len(f) > 127 {
			return bad("boot file %q is longer than 127 bytes: PXE ROMs read it from the 128-byte file field", f)
		}
	}
	if c.HTTPBootURL != "" {
		u, err := url.Parse(c.HTTPBootURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(c.HTTPBootURL) > 127 {
			return bad("HTTP boot URL %q: want http://host:port/path of the loader, at most 127 bytes", c.HTTPBootURL)
		}
	}
	if c.ScriptURL == "" && c.ServerURL != "" {
		c.ScriptURL = strings.TrimSuffix(c.ServerURL, "/") + "/boot/{mac}.ipxe"
	}
	if len(c.ScriptURL) > 240 {
		return bad("script URL %q is too long for one DHCP option", c.ScriptURL)
	}
	if c.Mode == Proxy {
		return c, nil
	}

	// Full mode.
	if c.PrefixLen < 8 || c.PrefixLen > 30 {
		return bad("prefix length %d: set PrefixLen between 8 and 30 (24 for 255.255.255.0)", c.PrefixLen)
	}
	subnet := netip.PrefixFrom(c.ServerIP, c.PrefixLen).Masked()
	if c.LeaseTime == 0 {
		c.LeaseTime = DefaultLeaseTime
	}
	if c.LeaseTime < 30*time.Second || c.LeaseTime > 365*24*time.Hour {
		return bad("lease time %v: pick between 30s and a year (default 1h)", c.LeaseTime)
	}
	if !c.PoolStart.Is4() || !c.PoolEnd.Is4() {
		return bad("full mode needs an address pool: set PoolStart and PoolEnd inside %s", subnet)
	}
	if !subnet.Contains(c.PoolStart) || !subnet.Contains(c.PoolEnd) {
		return bad("pool %v–%v is not inside our network %s (ServerIP %v/%d)", c.PoolStart, c.PoolEnd, subnet, c.ServerIP, c.PrefixLen)
	}
	if c.PoolEnd.Less(c.PoolStart) {
		return bad("pool start %v is after pool end %v", c.PoolStart, c.PoolEnd)
	}
	if c.PoolStart == subnet.Addr() || c.PoolEnd == broadcast(subnet) {
		return bad("pool %v–%v includes the network or broadcast address of %s", c.PoolStart, c.PoolEnd, subnet)
	}
	n := int(u32(c.PoolEnd) - u32(c.PoolStart) + 1)
	if n > maxPool {
		return bad("pool of %d addresses is larger than %d: shrink it", n, maxPool)
	}
	switch {
	case c.PoolReserve < 0 || c.PoolReserve > n:
		return bad("pool reserve %d: want 0 to the pool's %d addresses", c.PoolReserve, n)
	case c.Priority == nil:
		c.PoolReserve = 0
	case c.PoolReserve == 0 && n >= 2:
		c.PoolReserve = max(1, n/10)
	}
	if c.Router.IsValid() && (!c.Router.Is4() || !subnet.Contains(c.Router)) {
		return bad("router %v is not inside %s", c.Router, subnet)
	}
	for _, d := range c.DNS {
		if !d.Is4() {
			return bad("DNS server %v is not IPv4", d)
		}
	}
	seen := map[netip.Addr]string{}
	res := make(map[string]netip.Addr, len(c.Reservations))
	for m, ip := range c.Reservations {
		mac, err := protocol.ParseMAC(m)
		if err != nil {
			return bad("reservation %q: want a MAC such as 52:54:00:12:34:56", m)
		}
		if !ip.Is4() || !subnet.Contains(ip) || ip == c.ServerIP || ip == c.Router || ip == subnet.Addr() || ip == broadcast(subnet) {
			return bad("reservation %s → %v: want a free host address inside %s", m, ip, subnet)
		}
		if other, dup := seen[ip]; dup {
			return bad("address %v is reserved for both %s and %s", ip, other, m)
		}
		seen[ip] = m
		res[mac] = ip
	}
	c.Reservations = res
	return c, nil
}

// Handler answers DHCP packets: the socket-free core of Start, for
// tests and fuzzing. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	subnet netip.Prefix
	log    *slog.Logger
	now    func() time.Time
	chain  []step

	mu     sync.Mutex
	leases *addrBook // full mode only
}

// Handler validates c and returns its packet handler; in full mode it
// loads LeaseFile. ServerIP and, for full mode, PrefixLen must be set
// (Start fills them in from Interface).
func (c Config) Handler(log *slog.Logger) (*Handler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: c, log: log, now: time.Now}
	// The handler chain: each step reads the request and adds to (or
	// decides) the reply, in this order. Registered here, in code, per
	// mode; there is no global registry.
	switch c.Mode {
	case Full:
		h.subnet = netip.PrefixFrom(c.ServerIP, c.PrefixLen).Masked()
		h.leases, err = loadAddrBook(c, h.subnet, log)
		if err != nil {
			return nil, err
		}
		h.chain = []step{
			{"client", stepClient},
			{"lease", stepLease},
			{"server-id", stepServerID},
			{"network", stepNetwork},
			{"boot-file", stepBootFile},
			{"pxe-vendor", stepPXEVendor},
			{"server-url", stepServerURL},
			{"fit", stepFit},
		}
	case Proxy:
		h.chain = []step{
			{"client", stepClient},
			{"proxy", stepProxy},
			{"server-id", stepServerID},
			{"boot-file", stepBootFile},
			{"pxe-vendor", stepPXEVendor},
			{"server-url", stepServerURL},
			{"fit", stepFit},
		}
	default:
		return nil, fmt.Errorf("%w: mode %q serves nothing, so it has no handler", ErrBadConfig, c.Mode)
	}
	return h, nil
}

// A step is one link of the handler chain. It returns
// errIgnore (wrapped with a reason) to end the exchange without an
// answer; steps after the deciding one skip when there is no OFFER/ACK to
// add to.
type step struct {
	name string
	run  func(*Handler, *exchange) error
}

// errIgnore ends an exchange silently (logged at debug).
var errIgnore = errors.New("no reply")

func ignore(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errIgnore}, args...)...)
}

// exchange is one request and the reply being built for it.
type exchange struct {
	req  *dhcpv4.DHCPv4
	resp *dhcpv4.DHCPv4 // nil until a step decides to answer
	port int            // the local port it arrived on: 67 or 4011
	from netip.AddrPort

	mac         net.HardwareAddr
	vendorClass string
	pxe         bool   // option 60 starts with "PXEClient"
	http        bool   // option 60 starts with "HTTPClient" (UEFI HTTP boot)
	ipxe        bool   // option 77 says "iPXE"
	agent       bool   // option 60 starts with "pxeswarm"
	arch        uint16 // option 93, or noArch
	bootFile    string // what the boot-file step chose
	wire        []byte // the marshalled reply (fit step)
}

// noArch marks a client that sent no architecture.
const noArch = 0xffff

func (x *exchange) answering() bool {
	if x.resp == nil {
		return false
	}
	t := x.resp.MessageType()
	return t == dhcpv4.MessageTypeOffer || t == dhcpv4.MessageTypeAck
}

// Reply answers one packet that arrived on local port port (67, or 4011
// in proxy mode) from from. It returns the reply and where to send it,
// or nil if the packet gets no answer (malformed, not for us, or a
// RELEASE/DECLINE). Malformed input is logged at debug and dropped.
func (h *Handler) Reply(pkt []byte, port int, from netip.AddrPort) ([]byte, netip.AddrPort) {
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		h.log.Debug("dhcp: malformed packet dropped", "from", from, "bytes", len(pkt), "err", err)
		return nil, netip.AddrPort{}
	}
	x := &exchange{req: req, port: port, from: from, arch: noArch}
	h.mu.Lock()
	err = h.runChain(x)
	h.mu.Unlock()
	if err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, errIgnore) {
			lvl = slog.LevelDebug
		}
		h.log.Log(context.Background(), lvl, "dhcp: no reply", "type", req.MessageType().String(), "mac", x.mac.String(), "from", from, "port", port, "why", err)
		return nil, netip.AddrPort{}
	}
	to := replyDest(x)
	h.log.Info("dhcp: reply", "type", x.resp.MessageType().String(), "mac", x.mac.String(), "yiaddr", x.resp.YourIPAddr,
		"boot", x.bootFile, "arch", x.arch, "to", to, "port", port)
	if h.cfg.OnBoot != nil && x.bootFile != "" && x.answering() {
		ip, _ := netip.AddrFromSlice(x.resp.YourIPAddr.To4())
		if !ip.IsValid() || ip.IsUnspecified() {
			ip, _ = netip.AddrFromSlice(x.req.ClientIPAddr.To4())
		}
		if ip.IsUnspecified() {
			ip = netip.Addr{}
		}
		h.cfg.OnBoot(x.mac, x.arch, ip)
	}
	return x.wire, to
}

func (h *Handler) runChain(x *exchange) error {
	for _, s := range h.chain {
		if err := s.run(h, x); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if x.resp == nil || x.wire == nil {
		return ignore("nothing to send")
	}
	return nil
}

// replyDest picks the reply's destination per RFC 2131 §4.1.
func replyDest(x *exchange) netip.AddrPort {
	bcast := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), clientPort)
	if x.port == PXEPort {
		// PXE 2.1: the boot server answers a port-4011 request at the
		// address and port it came from (the client has its address).
		return x.from
	}
	if gi := toAddr(x.req.GatewayIPAddr); gi.IsValid() && !gi.IsUnspecified() {
		// Relayed: back to the relay agent's server port.
		return netip.AddrPortFrom(gi, serverPort)
	}
	if x.resp.MessageType() == dhcpv4.MessageTypeNak {
		// "In all cases, when 'giaddr' is zero, the server broadcasts any
		// DHCPNAK messages to 0xffffffff."
		return bcast
	}
	if ci := toAddr(x.req.ClientIPAddr); ci.IsValid() && !ci.IsUnspecified() {
		// RENEWING, REBINDING, INFORM: the client has its address.
		return netip.AddrPortFrom(ci, clientPort)
	}
	// A client without an address: the RFC would have us unicast to
	// yiaddr at chaddr when the broadcast bit is clear, which needs an ARP
	// entry forged for a host that cannot answer ARP yet. "If unicasting
	// is not possible, the message MAY be sent as an IP broadcast", which
	// every client we know accepts (PXE ROMs, iPXE, udhcpc, dhclient).
	return bcast
}

// stepClient checks the request's shape and classifies the client.
func stepClient(h *Handler, x *exchange) error {
	r := x.req
	if r.OpCode != dhcpv4.OpcodeBootRequest {
		return ignore("op %v is not a client request", r.OpCode)
	}
	if r.HWType != 1 || len(r.ClientHWAddr) != 6 {
		return ignore("hardware type %d length %d: only Ethernet clients are served", r.HWType, len(r.ClientHWAddr))
	}
	if r.MessageType() == dhcpv4.MessageTypeNone {
		return ignore("BOOTP request without DHCP message type")
	}
	x.mac = r.ClientHWAddr
	x.vendorClass = r.ClassIdentifier()
	// PXE 2.1 §2.2.1: firmware sends "PXEClient:Arch:xxxxx:UNDI:yyyzzz";
	// iPXE sends the same.
	x.pxe = strings.HasPrefix(x.vendorClass, "PXEClient")
	// UEFI HTTP boot sends "HTTPClient:Arch:00016:UNDI:003001".
	x.http = strings.HasPrefix(x.vendorClass, "HTTPClient")
	x.agent = strings.HasPrefix(x.vendorClass, "pxeswarm")
	// Option 77: iPXE sends the bare string "iPXE" (not the RFC 3004
	// length-prefixed list), others may send the RFC form.
	if uc := r.Options.Get(dhcpv4.OptionUserClassInformation); uc != nil {
		x.ipxe = string(uc) == "iPXE" || string(uc) == "\x04iPXE"
	}
	// Option 93 (RFC 4578 §2.1): a list of 16-bit architecture types; the
	// first is the one booting. Without it, the vendor class may say.
	if a := r.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(a) >= 2 {
		x.arch = uint16(a[0])<<8 | uint16(a[1])
	} else if _, rest, ok := strings.Cut(x.vendorClass, "Client:Arch:"); ok && (x.pxe || x.http) && len(rest) >= 5 {
		var n uint16
		valid := true
		for _, c := range rest[:5] {
			if c < '0' || c > '9' {
				valid = false
				break
			}
			n = n*10 + uint16(c-'0')
		}
		if valid {
			x.arch = n
		}
	}
	if h.cfg.Seen != nil && (x.pxe || x.http || x.ipxe || x.agent) {
		if t := r.MessageType(); t == dhcpv4.MessageTypeDiscover || t == dhcpv4.MessageTypeRequest {
			h.cfg.Seen(x.mac, x.arch, x.agent)
		}
	}
	return nil
}

// newReply starts a reply of type t: BOOTREPLY with the request's xid,
// chaddr, flags and giaddr (RFC 2131 Table 3).
func (x *exchange) newReply(t dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := x.req
	resp := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        r.HWType,
		TransactionID: r.TransactionID,
		Flags:         r.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: r.GatewayIPAddr,
		ClientHWAddr:  r.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	resp.UpdateOption(dhcpv4.OptMessageType(t))
	if gi := toAddr(r.GatewayIPAddr); gi.IsValid() && !gi.IsUnspecified() {
		// RFC 3046 §2.2: echo the relay agent information.
		if v := r.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil {
			resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, v))
		}
		if t == dhcpv4.MessageTypeNak {
			resp.SetBroadcast() // RFC 2131 §4.1: NAK via a relay is broadcast
		}
	}
	// RFC 6842: echo the client identifier (bounded; the fit step may
	// still shed it).
	if v := r.Options.Get(dhcpv4.OptionClientIdentifier); len(v) > 0 && len(v) <= 255 {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, v))
	}
	x.resp = resp
	return resp
}

// stepLease is full mode's decision: which message answers, with
// which address (RFC 2131 §4.3).
func stepLease(h *Handler, x *exchange) error {
	r := x.req
	if x.port != serverPort {
		return ignore("full mode answers on port 67 only")
	}
	if gi := toAddr(r.GatewayIPAddr); gi.IsValid() && !gi.IsUnspecified() && !h.subnet.Contains(gi) {
		return ignore("relayed from %v, outside our network %s: pxeswarm serves one network", gi, h.subnet)
	}
	mac := x.mac.String()
	now := h.now()
	l := h.leases
	prio := h.cfg.Priority != nil && h.cfg.Priority(x.mac)
	switch r.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip := l.pick(mac, toAddr(r.RequestedIPAddress()), now, prio)
		if !ip.IsValid() {
			if !prio && l.reserve > 0 && l.free(now) > 0 {
				return fmt.Errorf("the pool %v–%v is down to its reserve of %d addresses, kept for machines with a task or listed in the site config; %s is neither: enlarge the pool, or list the machine", h.cfg.PoolStart, h.cfg.PoolEnd, l.reserve, mac)
			}
			return fmt.Errorf("no free address for %s in pool %v–%v: enlarge the pool or shorten LeaseTime", mac, h.cfg.PoolStart, h.cfg.PoolEnd)
		}
		l.offer(mac, ip, now, prio)
		resp := x.newReply(dhcpv4.MessageTypeOffer)
		resp.YourIPAddr = ip.AsSlice()
		return nil

	case dhcpv4.MessageTypeRequest:
		sid := toAddr(r.ServerIdentifier())
		reqIP := toAddr(r.RequestedIPAddress())
		ciaddr := toAddr(r.ClientIPAddr)
		var ip netip.Addr
		switch {
		case sid.IsValid():
			// SELECTING: the client answers one server's OFFER.
			if sid != h.cfg.ServerIP {
				l.dropOffer(mac)
				return ignore("client chose server %v", sid)
			}
			ip = reqIP
			if !ip.IsValid() {
				ip = ciaddr
			}
		case reqIP.IsValid():
			ip = reqIP // INIT-REBOOT: verifying a remembered address
		case ciaddr.IsValid() && !ciaddr.IsUnspecified():
			ip = ciaddr // RENEWING (unicast to us) or REBINDING (broadcast)
		default:
			return ignore("REQUEST names no address")
		}
		if !ip.IsValid() || ip.IsUnspecified() || !h.subnet.Contains(ip) {
			return x.nak(h, fmt.Sprintf("address %v is not on network %s", ip, h.subnet))
		}
		if !l.canGrant(mac, ip, now, prio) {
			return x.nak(h, fmt.Sprintf("address %v is not yours", ip))
		}
		if err := l.bind(mac, ip, now.Add(h.cfg.LeaseTime)); err != nil {
			// The lease holds in memory; only the file is behind.
			h.log.Error("dhcp: could not save the lease file: leases given since may be forgotten on restart; check the disk and permissions", "file", h.cfg.LeaseFile, "err", err)
		}
		resp := x.newReply(dhcpv4.MessageTypeAck)
		resp.YourIPAddr = ip.AsSlice()
		resp.ClientIPAddr = r.ClientIPAddr
		return nil

	case dhcpv4.MessageTypeRelease:
		sid := toAddr(r.ServerIdentifier())
		if sid.IsValid() && sid != h.cfg.ServerIP {
			return ignore("RELEASE for server %v", sid)
		}
		if released, err := l.release(mac, toAddr(r.ClientIPAddr), now); err != nil {
			h.log.Error("dhcp: could not save the lease file; check the disk and permissions", "file", h.cfg.LeaseFile, "err", err)
		} else if released {
			h.log.Info("dhcp: released", "mac", mac, "ip", r.ClientIPAddr)
		}
		return ignore("RELEASE needs no answer")

	case dhcpv4.MessageTypeDecline:
		sid := toAddr(r.ServerIdentifier())
		if sid.IsValid() && sid != h.cfg.ServerIP {
			return ignore("DECLINE for server %v", sid)
		}
		ip := toAddr(r.RequestedIPAddress())
		if declined, err := l.decline(mac, ip, now); err != nil {
			h.log.Error("dhcp: could not save the lease file; check the disk and permissions", "file", h.cfg.LeaseFile, "err", err)
		} else if declined {
			// RFC 2131 §4.3.3: mark it unavailable and tell the admin.
			h.log.Warn("dhcp: address declined: another host on the network uses it; find it, or reserve the address", "mac", mac, "ip", ip, "held", declineHold)
		}
		return ignore("DECLINE needs no answer")

	case dhcpv4.MessageTypeInform:
		// RFC 2131 §4.3.5: configuration only, no lease, no yiaddr.
		ci := toAddr(r.ClientIPAddr)
		if !ci.IsValid() || ci.IsUnspecified() {
			ci = x.from.Addr()
		}
		if !h.subnet.Contains(ci) {
			return ignore("INFORM from %v outside %s", ci, h.subnet)
		}
		resp := x.newReply(dhcpv4.MessageTypeAck)
		resp.ClientIPAddr = r.ClientIPAddr
		return nil
	}
	return ignore("message type %v is not for a server", r.MessageType())
}

// nak answers with DHCPNAK: server identifier and a message only.
func (x *exchange) nak(h *Handler, why string) error {
	resp := x.newReply(dhcpv4.MessageTypeNak)
	resp.UpdateOption(dhcpv4.OptMessage(why))
	h.log.Info("dhcp: NAK", "mac", x.mac.String(), "why", why)
	return nil
}

// stepProxy is proxy mode's decision (PXE 2.1 §2.2.1): answer PXE
// DISCOVERs on port 67 with an OFFER without an address, and REQUESTs
// on port 4011 with an ACK. Everything else belongs to the school's
// DHCP server: never NAK, never ACK a lease.
func stepProxy(h *Handler, x *exchange) error {
	if !x.pxe && !x.http && !x.agent {
		return ignore("vendor class %q is neither PXEClient, HTTPClient nor pxeswarm", x.vendorClass)
	}
	t := x.req.MessageType()
	switch {
	case x.port == serverPort && t == dhcpv4.MessageTypeDiscover:
		x.newReply(dhcpv4.MessageTypeOffer)
	case x.port == PXEPort && t == dhcpv4.MessageTypeRequest:
		resp := x.newReply(dhcpv4.MessageTypeAck)
		resp.ClientIPAddr = x.req.ClientIPAddr
	default:
		return ignore("proxyDHCP leaves %v on port %d to the DHCP server", t, x.port)
	}
	x.resp.YourIPAddr = net.IPv4zero // never an address (siaddr: stepServerID)
	return nil
}

// stepServerID adds option 54 to every reply (NAK included) and
// siaddr to OFFER/ACK.
func stepServerID(h *Handler, x *exchange) error {
	if x.resp == nil {
		return nil
	}
	x.resp.UpdateOption(dhcpv4.OptServerIdentifier(h.cfg.ServerIP.AsSlice()))
	if x.answering() {
		x.resp.ServerIPAddr = h.cfg.ServerIP.AsSlice()
	}
	return nil
}

// stepNetwork adds the network's settings (full mode).
func stepNetwork(h *Handler, x *exchange) error {
	if !x.answering() {
		return nil
	}
	r := x.resp
	r.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(h.subnet.Bits(), 32)))
	r.UpdateOption(dhcpv4.OptBroadcastAddress(broadcast(h.subnet).AsSlice()))
	if h.cfg.Router.IsValid() {
		r.UpdateOption(dhcpv4.OptRouter(h.cfg.Router.AsSlice()))
	}
	if len(h.cfg.DNS) > 0 {
		ips := make([]net.IP, len(h.cfg.DNS))
		for i, d := range h.cfg.DNS {
			ips[i] = d.AsSlice()
		}
		r.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	if x.req.MessageType() != dhcpv4.MessageTypeInform {
		lt := h.cfg.LeaseTime
		r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		r.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))         // T1, RFC 2131 §4.4.5
		r.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8)) // T2
	}
	return nil
}

// stepBootFile picks what a PXE client boots: the iPXE script URL
// for iPXE (so it does not load iPXE again), else iPXE for the client's
// architecture.
func stepBootFile(h *Handler, x *exchange) error {
	if !x.answering() || (!x.pxe && !x.ipxe && !x.http) {
		return nil
	}
	if h.cfg.Boot != nil && !h.cfg.Boot(x.mac) {
		h.log.Info("dhcp: no task; no boot file, the firmware boots its disk", "mac", x.mac.String(), "arch", x.arch)
		if h.cfg.Mode == Proxy {
			return ignore("no task for %s", x.mac)
		}
		return nil
	}
	var file string
	switch {
	case x.ipxe:
		file = h.scriptURL(x.mac)
		if file == "" {
			h.log.Warn("dhcp: iPXE asked what to boot but ScriptURL and ServerURL are empty: set one", "mac", x.mac.String())
		}
	case x.http:
		if x.arch != archUEFIx64HTTP || h.cfg.HTTPBootURL == "" {
			h.log.Info("dhcp: UEFI HTTP boot client not served (only x86-64, arch 16, with an HTTP boot URL set)", "mac", x.mac.String(), "arch", x.arch)
			if h.cfg.Mode == Proxy {
				return ignore("HTTP boot arch %d not served", x.arch)
			}
			return nil
		}
		file = h.cfg.HTTPBootURL
	case x.arch == archBIOS:
		file = h.cfg.BootFileBIOS
	case x.arch == archUEFIx64 || x.arch == archUEFIx64Old:
		file = h.cfg.BootFileUEFI
	default:
		h.log.Info("dhcp: PXE client architecture not served (0 BIOS, 7/9 x86-64 UEFI are)", "mac", x.mac.String(), "arch", x.arch, "vendor", x.vendorClass)
		if h.cfg.Mode == Proxy {
			return ignore("architecture %d not served", x.arch)
		}
		return nil
	}
	if file == "" {
		return nil
	}
	x.bootFile = file
	if len(file) <= 127 {
		x.resp.BootFileName = file
	}
	x.resp.UpdateOption(dhcpv4.OptBootFileName(file))
	if x.http {
		// UEFI 2.5 §24.7.2: an HTTP boot offer must say HTTPClient.
		x.resp.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
		return nil
	}
	x.resp.UpdateOption(dhcpv4.OptTFTPServerName(h.cfg.ServerIP.String())) // siaddr: stepServerID
	return nil
}

// scriptURL expands ScriptURL for mac.
func (h *Handler) scriptURL(mac net.HardwareAddr) string {
	return strings.ReplaceAll(h.cfg.ScriptURL, "{mac}", strings.ReplaceAll(mac.String(), ":", "-"))
}

// pxeVendorOptions is option 43 for PXE clients (PXE 2.1 §2.2.5):
// sub-option 6 PXE_DISCOVERY_CONTROL = 0x08, "if set, and a boot file name
// is present in the initial DHCP or ProxyDHCP offer packet, download the
// boot file (do not prompt/menu/discover)"; then the end tag.
const pxeVendorOptions = "\x06\x01\x08\xff"

// stepPXEVendor marks replies to PXE clients as PXE-aware: option 60
// "PXEClient" (without it firmware ignores a proxy offer), option 43, and
// the client's UUID (option 97) echoed, which some UEFI firmware checks.
func stepPXEVendor(h *Handler, x *exchange) error {
	if !x.answering() || !x.pxe {
		return nil
	}
	x.resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	x.resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte(pxeVendorOptions)))
	// RFC 4578 §2.3: type 0 then a 16-byte UUID.
	if g := x.req.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(g) == 17 && g[0] == 0 {
		x.resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, g))
	}
	return nil
}

// stepServerURL adds the server URL option to every OFFER and ACK
// (not only PXE clients': the agent reads it from its own lease).
func stepServerURL(h *Handler, x *exchange) error {
	if !x.answering() || h.cfg.ServerURL == "" {
		return nil
	}
	x.resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(h.cfg.URLOption), []byte(h.cfg.ServerURL)))
	return nil
}

// shedOrder is what the fit step drops, first to last, when a reply
// is larger than the client accepts.
var shedOrder = [...]dhcpv4.OptionCode{
	dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionTFTPServerName,
	dhcpv4.OptionClientMachineIdentifier,
	dhcpv4.OptionClientIdentifier,
	dhcpv4.OptionBroadcastAddress,
	dhcpv4.OptionRenewTimeValue,
	dhcpv4.OptionRebindingTimeValue,
}

// maxReply is the reply size (DHCP payload) the client accepts.
// Option 57 counts the IP and UDP headers (RFC 2131 §2: 576 octets is
// the smallest datagram a client must accept, 28 of them headers); below
// 576 it is illegal and ignored. We never send more than an Ethernet
// frame holds.
func maxReply(req *dhcpv4.DHCPv4) int {
	limit := 576
	if v, err := req.MaxMessageSize(); err == nil && int(v) > limit {
		limit = int(v)
	}
	return min(limit, 1500) - 28
}

// stepFit marshals the reply, shedding optional options until it is
// no larger than the client accepts.
func stepFit(h *Handler, x *exchange) error {
	if x.resp == nil {
		return nil
	}
	limit := maxReply(x.req)
	wire := x.resp.ToBytes()
	for _, code := range shedOrder {
		if len(wire) <= limit {
			break
		}
		if x.resp.Options.Has(code) {
			x.resp.Options.Del(code)
			wire = x.resp.ToBytes()
		}
	}
	// Option 67 can go too when the file field holds the same name (a
	// longer name, such as a script URL, lives in option 67 only).
	if len(wire) > limit && x.resp.BootFileName != "" && x.resp.Options.Has(dhcpv4.OptionBootfileName) {
		x.resp.Options.Del(dhcpv4.OptionBootfileName)
		wire = x.resp.ToBytes()
	}
	if len(wire) > limit {
		return fmt.Errorf("reply is %d bytes, client accepts %d: shorten ServerURL, ScriptURL or the boot file names", len(wire), limit)
	}
	x.wire = wire
	return nil
}

// Start serves DHCP on Interface until ctx ends (then returns nil). In
// proxy mode it also serves PXE requests on port 4011. Mode off serves
// nothing and just waits for ctx.
func (c Config) Start(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.Mode == "" || c.Mode == Off {
		log.Info("dhcp: off")
		<-ctx.Done()
		return nil
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if c.Interface == "" {
		return fmt.Errorf("%w: no interface: set Interface to the classroom network's interface (e.g. eth1)", ErrBadConfig)
	}
	c, err := c.fromInterface()
	if err != nil {
		return err
	}
	h, err := c.Handler(log)
	if err != nil {
		return err
	}
	ports := []int{serverPort}
	if c.Mode == Proxy {
		ports = append(ports, PXEPort)
	}
	var conns []*net.UDPConn
	closeAll := func() {
		for _, conn := range conns {
			conn.Close()
		}
	}
	for _, p := range ports {
		conn, err := listen(c.Interface, p)
		if err != nil {
			closeAll()
			return fmt.Errorf("dhcp: listen on %s port %d: is another DHCP server (dnsmasq, isc-dhcp-server) running on this host? %w", c.Interface, p, err)
		}
		conns = append(conns, conn)
	}
	hc := h.cfg
	log.Info("dhcp: serving", "mode", hc.Mode, "interface", hc.Interface, "server", hc.ServerIP, "ports", ports,
		"pool_start", hc.PoolStart, "pool_end", hc.PoolEnd, "url_option", hc.URLOption, "server_url", hc.ServerURL)
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() { h.serve(ctx, conn, ports[i]) })
	}
	<-ctx.Done()
	closeAll()
	wg.Wait()
	if err := h.Close(); err != nil {
		log.Error("dhcp: could not write the lease file at stop; the journal beside it keeps the leases", "file", hc.LeaseFile, "err", err)
	}
	log.Info("dhcp: stopped")
	return nil
}

// Close writes the leases to the lease file in full (folding in the
// journal) and closes the journal. The handler must not be used after.
func (h *Handler) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leases == nil {
		return nil
	}
	return h.leases.close()
}

// fromInterface fills ServerIP and PrefixLen from Interface's addresses.
func (c Config) fromInterface() (Config, error) {
	ifi, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return c, fmt.Errorf("%w: interface %q: %v: check the name with `ip link`", ErrBadConfig, c.Interface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return c, fmt.Errorf("dhcp: addresses of %s: %w", c.Interface, err)
	}
	var have []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP.To4())
		if !ok {
			continue
		}
		bits, _ := ipn.Mask.Size()
		have = append(have, fmt.Sprintf("%v/%d", ip, bits))
		if !c.ServerIP.IsValid() {
			c.ServerIP = ip
		}
		if ip == c.ServerIP {
			if c.PrefixLen == 0 {
				c.PrefixLen = bits
			}
			return c, nil
		}
	}
	if len(have) == 0 {
		return c, fmt.Errorf("%w: interface %s has no IPv4 address: give it one (ip addr add 198.18.0.1/24 dev %s)", ErrBadConfig, c.Interface, c.Interface)
	}
	return c, fmt.Errorf("%w: ServerIP %v is not an address of %s (it has %s): pick one of those", ErrBadConfig, c.ServerIP, c.Interface, strings.Join(have, ", "))
}

// serve answers packets on conn until ctx ends. A bug that panics on one
// packet costs that packet, not the server.
func (h *Handler) serve(ctx context.Context, conn *net.UDPConn, port int) {
	buf := make([]byte, 64<<10)
	for ctx.Err() == nil {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			h.log.Warn("dhcp: read failed", "port", port, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		out, to := h.safeReply(buf[:n], port, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
		if out == nil {
			continue
		}
		if _, err := conn.WriteToUDPAddrPort(out, to); err != nil {
			h.log.Warn("dhcp: send failed", "to", to, "err", err)
		}
	}
}

func (h *Handler) safeReply(pkt []byte, port int, from netip.AddrPort) (out []byte, to netip.AddrPort) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("dhcp: bug: panic while answering a packet; dropped it (please report)", "from", from, "panic", r, "stack", string(debug.Stack()))
			out = nil
		}
	}()
	return h.Reply(pkt, port, from)
}

// toAddr converts a packet's IPv4 field; invalid if absent or not IPv4.
func toAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Addr{}
	}
	return a
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func broadcast(p netip.Prefix) netip.Addr {
	return fromU32(u32(p.Masked().Addr()) | (1<<(32-p.Bits()) - 1))
}
