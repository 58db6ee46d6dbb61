package pxe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// consoleRoom is the browser test's network: a room namespace with a
// bridge (the server's interface, where its magic packets leave), one
// machine on it (its own namespace, capturing frames), and a veth from
// this host's namespace to the room namespace, by which Chromium and the
// fake agents reach the server.
type consoleRoom struct {
	lan *netns.LAN
	pc  *netns.Host
	// bridge is the server's interface in the room namespace.
	bridge string
	// bridgeMAC is the bridge's hardware address: the source of the
	// server's frames into the room.
	bridgeMAC net.HardwareAddr
	// server is the room namespace's end of the uplink: the console's
	// address as Chromium sees it.
	server netip.Addr
}

// newConsoleRoom builds the room: LAN bridge 198.18.1.1/24 (the
// server), the machine pcAddr with MAC pcMAC, and an uplink /30 in
// 198.19.0.0/16 picked from this process's PID (so that parallel test
// binaries and the demo, which uses 198.18.255.0/30, do not clash).
// Everything is removed when the test ends, also on failure: the host's
// end of the uplink by its own cleanup, the namespaces (and with them
// the veths inside) by netns.
func newConsoleRoom(t *testing.T, pcAddr netip.Prefix, pcMAC net.HardwareAddr) *consoleRoom {
	t.Helper()
	lan := netns.NewLAN(t, "con", netip.MustParsePrefix("198.18.1.1/24"))
	r := &consoleRoom{lan: lan, pc: lan.AddHost(t, "pc", pcAddr, pcMAC), bridge: lan.Bridge}
	err := lan.NS.Do(func() error {
		ifi, err := net.InterfaceByName(lan.Bridge)
		if err != nil {
			return err
		}
		r.bridgeMAC = ifi.HardwareAddr
		return nil
	})
	if err != nil {
		t.Fatalf("reading the bridge's MAC: %v", err)
	}

	pid := os.Getpid()
	n := (pid % 16384) * 4 // a /30 in 198.19.0.0/16
	hostAddr := netip.AddrFrom4([4]byte{198, 19, byte(n >> 8), byte(n&0xff) + 1})
	r.server = netip.AddrFrom4([4]byte{198, 19, byte(n >> 8), byte(n&0xff) + 2})
	host := fmt.Sprintf("pxcon%d", pid) // at most 12 characters: fits IFNAMSIZ
	ip := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := execIP(ctx, args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("link", "add", host, "type", "veth", "peer", "name", "uplink", "netns", lan.NS.Name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := net.InterfaceByName(host); err != nil {
			return // gone
		}
		if out, err := execIP(ctx, "link", "del", host); err != nil {
			t.Errorf("removing the uplink %s: %v: %s", host, err, out)
		}
	})
	ip("addr", "add", netip.PrefixFrom(hostAddr, 30).String(), "dev", host)
	ip("link", "set", host, "up")
	lan.NS.MustIP("addr", "add", netip.PrefixFrom(r.server, 30).String(), "dev", "uplink")
	lan.NS.MustIP("link", "set", "uplink", "up")
	return r
}

// serve runs cfg's HTTP server in the room namespace: its listener is a
// socket of that namespace (on the uplink's address), and every request
// is handled on a thread switched into the namespace (netns.NS.Do), so
// the sockets a handler opens, the wake button's among them, are the
// namespace's: wake.interface names the bridge there. It returns the
// console's base URL; the server stops when the test ends.
func (r *consoleRoom) serve(t *testing.T, cfg HTTPConfig) string {
	t.Helper()
	ln := r.listen(t)
	cfg.PublicURL = "http://" + ln.Addr().String()
	h, err := cfg.HandlerWithLog(testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	// Handlers are counted so that the cleanup can wait for them (they
	// log to t); none starts once the cleanup began.
	var (
		mu       sync.Mutex
		closed   bool
		inflight sync.WaitGroup
	)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			mu.Lock()
			if closed {
				mu.Unlock()
				http.Error(w, "the test server is stopping", http.StatusServiceUnavailable)
				return
			}
			inflight.Add(1)
			mu.Unlock()
			defer inflight.Done()
			if err := r.lan.NS.Do(func() error { h.ServeHTTP(w, req); return nil }); err != nil {
				t.Errorf("handling %s %s in the room namespace: %v", req.Method, req.URL.Path, err)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		mu.Lock()
		closed = true
		mu.Unlock()
		// Close, not Shutdown: the console's event streams last until
		// their connection ends.
		srv.Close()
		<-done
		waited := make(chan struct{})
		go func() { inflight.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			t.Errorf("console handlers still running 10s after the server closed")
		}
	})
	return cfg.PublicURL
}

// listen opens a TCP listener on the server's address in the room
// namespace, on a free port: the console's (serve), or another one for a
// page of another origin, same site.
func (r *consoleRoom) listen(t *testing.T) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := r.lan.NS.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(r.server, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listening in the room namespace: %v", err)
	}
	return ln
}

// frameTap is an AF_PACKET capture on one interface.
type frameTap struct {
	mu     sync.Mutex
	frames []wireFrame
	stop   chan struct{}
	done   chan struct{}
}

// capture starts reading every frame that arrives at the room machine's
// interface (a raw AF_PACKET socket in its namespace) and keeps the UDP
// ones, until the test ends (at most 10 minutes).
func (r *consoleRoom) capture(t *testing.T) *frameTap {
	t.Helper()
	var fd int
	err := r.pc.NS.Do(func() error {
		ifi, err := net.InterfaceByName(r.pc.Link)
		if err != nil {
			return err
		}
		all := htons(unix.ETH_P_ALL)
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(all)); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: all, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw socket on %s in %s: %v", r.pc.Link, r.pc.Name, err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	c := &frameTap{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer unix.Close(fd)
		buf := make([]byte, 2048)
		deadline := time.Now().Add(10 * time.Minute)
		for time.Now().Before(deadline) {
			select {
			case <-c.stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
					return
				}
				continue
			}
			if f, ok := parseWireFrame(buf[:n]); ok {
				c.mu.Lock()
				c.frames = append(c.frames, f)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { close(c.stop); <-c.done })
	return c
}

// udp returns the frames to UDP port seen so far.
func (c *frameTap) udp(port int) []wireFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ret []wireFrame
	for _, f := range c.frames {
		if f.udpPort == port {
			ret = append(ret, f)
		}
	}
	return ret
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// parseWireFrame reads Ethernet + IPv4 + UDP; false for anything else.
func parseWireFrame(b []byte) (wireFrame, bool) {
	if len(b) < 14+20+8 || binary.BigEndian.Uint16(b[12:14]) != unix.ETH_P_IP {
		return wireFrame{}, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 {
		return wireFrame{}, false
	}
	udp := ip[ihl:]
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < 8 || ulen > len(udp) {
		return wireFrame{}, false
	}
	dst, _ := netip.AddrFromSlice(ip[16:20])
	return wireFrame{
		ethDst: append(net.HardwareAddr(nil), b[0:6]...), ethSrc: append(net.HardwareAddr(nil), b[6:12]...),
		ipDst: dst, udpPort: int(binary.BigEndian.Uint16(udp[2:4])), payload: append([]byte(nil), udp[8:ulen]...),
	}, true
}

// execIP runs ip(8) in this host's namespace.
func execIP(ctx context.Context, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "ip", args...).CombinedOutput()
}
