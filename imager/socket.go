package imager

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/anacrolix/torrent"
)

// pxeswarm opens its own peer sockets instead of anacrolix's, for two
// reasons:
//
//   - Peer dials and tracker announces leave from the listen address when
//     one is given (a multi-homed image host, or many peers on one test
//     host), so peers and the tracker see the address we listen on.
//   - Every peer connection gets a small TCP_NOTSENT_LOWAT (setNotSentLowat,
//     _linux.go), so Have and Request messages do not wait behind megabytes
//     of piece data queued in the kernel, and little of a cancelled
//     request is already queued there. On the bench LAN it did not change
//     the duplicate data measured by itself (fewer connections per peer
//     did, see docs/SWARM.md); it stays for the message latency.

// peerListener also caps the connections one address may hold at once
// (Tuning.MaxConnsPerHost): a terminal runs one agent, so one host that
// opens dozens is making them up (issue 15, finding 2), and the tracker
// already keeps at most tracker.DefaultMaxPeersPerHost of its peers.
type peerListener struct {
	net.Listener
	perHost int // 0: no cap
	log     *slog.Logger
	mu      sync.Mutex
	conns   map[netip.Addr]int
	warned  map[netip.Addr]bool // refusals logged since it was last below the cap
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return c, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // as anacrolix does for its own sockets
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		ip := ap.Addr().Unmap()
		l.mu.Lock()
		if l.perHost > 0 && l.conns[ip] >= l.perHost {
			warn := !l.warned[ip]
			l.warned[ip] = true
			l.mu.Unlock()
			if warn {
				l.log.Warn("refusing peer connections from an address that holds the most it may; one machine needs one",
					"peer", ip, "max_conns_per_host", l.perHost)
			}
			c.Close()
			continue
		}
		l.conns[ip]++
		l.mu.Unlock()
		tuneConn(c)
		return &hostConn{Conn: c, release: func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.conns[ip]--; l.conns[ip] <= 0 {
				delete(l.conns, ip)
			}
			delete(l.warned, ip)
		}}, nil
	}
}

// hostConn gives its address's slot back when it is closed.
type hostConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *hostConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func tuneConn(c net.Conn) {
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { setNotSentLowat(fd) })
		}
	}
}

// peerSockets returns the listener and dialer for peer connections. The
// listener accepts at most perHost connections from one address at once
// (0: no cap).
func peerSockets(host string, port int, ipv6 bool, perHost int, log *slog.Logger) (net.Listener, torrent.Dialer, error) {
	network := "tcp4"
	if ipv6 {
		network = "tcp"
	}
	ln, err := net.Listen(network, net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return nil, nil, err
	}
	d := &net.Dialer{
		KeepAlive: -1, // BitTorrent has its own keep-alives
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { setNotSentLowat(fd) })
		},
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return &peerListener{Listener: ln, perHost: perHost, log: log, conns: map[netip.Addr]int{}, warned: map[netip.Addr]bool{}}, torrent.NetworkDialer{Network: network, Dialer: d}, nil
}
