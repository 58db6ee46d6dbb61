package netns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLANHostsTalkAndCleanUp(t *testing.T) {
	Require(t)
	var names []string
	t.Run("lan", func(t *testing.T) {
		lan := NewLAN(t, "lan", netip.MustParsePrefix("198.18.0.1/24"))
		h := lan.AddHost(t, "h", netip.MustParsePrefix("198.18.0.2/24"), MAC(7))
		tap := lan.AddTap(t)
		names = []string{lan.NS.Name, h.Name}
		if got, want := h.MAC.String(), "52:54:00:00:00:07"; got != want {
			t.Errorf("AddHost MAC = %s, want %s", got, want)
		}
		if out := lan.NS.MustIP("-o", "link", "show", "master", "br0"); !strings.Contains(out, tap) || !strings.Contains(out, h.Port) {
			t.Errorf("bridge ports = %q, want %s and %s", out, tap, h.Port)
		}

		// A UDP round trip from the host's namespace to a socket opened in
		// the LAN's namespace proves Do and the veth/bridge plumbing.
		var srv net.PacketConn
		if err := lan.NS.Do(func() (err error) {
			srv, err = net.ListenPacket("udp4", "198.18.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		go func() {
			buf := make([]byte, 64)
			srv.SetDeadline(time.Now().Add(5 * time.Second))
			n, from, err := srv.ReadFrom(buf)
			if err == nil {
				srv.WriteTo(buf[:n], from)
			}
		}()
		var c net.Conn
		if err := h.Do(func() (err error) {
			c, err = net.Dial("udp4", srv.LocalAddr().String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("echo through the bridge = %q, %v, want \"ping\"", buf[:n], err)
		}

		// Run executes inside the host namespace: it sees its own address.
		out, err := h.Run(5*time.Second, "ip", "-o", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(out, "198.18.0.2/24") {
			t.Errorf("host address = %q, %v, want 198.18.0.2/24", out, err)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still exists after the test ended", n)
		}
	}
}

func TestNewLANRefusesOtherAddresses(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkAddr(ft, netip.MustParsePrefix("10.0.0.1/24"))
	}()
	<-done
	if !ft.failed {
		t.Error("checkAddr(10.0.0.1/24) did not fail the test, want a refusal outside 198.18.0.0/15")
	}
}

type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	runtimeGoexit()
}

func runtimeGoexit() { runtime.Goexit() }

// TestSweepStale: a namespace left by a test process that has exited is
// removed; one whose process still runs is kept.
func TestSweepStale(t *testing.T) {
	Require(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	alive := exec.Command("sleep", "30")
	if err := alive.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { alive.Process.Kill(); alive.Wait() }()
	stale := fmt.Sprintf("pxs%d-sweep-stale", dead.Process.Pid)
	live := fmt.Sprintf("pxs%d-sweep-live", alive.Process.Pid)
	for _, name := range []string{stale, live} {
		if err := run("ip", "netns", "add", name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { run("ip", "netns", "del", name) })
	}
	gone := sweepStale()
	if !slices.Contains(gone, stale) {
		t.Errorf("sweep removed %v, want it to include %s (its process exited)", gone, stale)
	}
	if slices.Contains(gone, live) {
		t.Errorf("sweep removed %s, whose process still runs", live)
	}
	if _, err := os.Stat("/run/netns/" + live); err != nil {
		t.Errorf("%s is gone: %v", live, err)
	}
	if _, err := os.Stat("/run/netns/" + stale); err == nil {
		t.Errorf("%s is still there", stale)
	}
}
