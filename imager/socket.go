package imager

import (
	"fmt"
	"net"
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

type peerListener struct{ net.Listener }

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		tuneConn(c)
	}
	return c, err
}

func tuneConn(c net.Conn) {
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { setNotSentLowat(fd) })
		}
	}
}

// peerSockets returns the listener and dialer for peer connections.
func peerSockets(host string, port int, ipv6 bool) (net.Listener, torrent.Dialer, error) {
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
	return peerListener{ln}, torrent.NetworkDialer{Network: network, Dialer: d}, nil
}
