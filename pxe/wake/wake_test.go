package wake

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestPacket(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	p, err := Packet(mac, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 102 {
		t.Fatalf("len = %d, want 102", len(p))
	}
	want := bytes.Repeat([]byte{0xff}, 6)
	for range 16 {
		want = append(want, mac...)
	}
	if !bytes.Equal(p, want) {
		t.Fatalf("packet = %x\nwant     %x", p, want)
	}
	got, pw, err := Parse(p)
	if err != nil || got.String() != mac.String() || pw != nil {
		t.Fatalf("Parse = %v %x %v, want %v without password", got, pw, err, mac)
	}

	sec, _ := ParsePassword("01:02:03:04:05:06")
	p, err = Packet(mac, sec)
	if err != nil || len(p) != 108 || !bytes.Equal(p[102:], []byte{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("with a 6-byte password: %x %v", p, err)
	}
	if _, pw, err := Parse(p); err != nil || !bytes.Equal(pw, sec) {
		t.Fatalf("Parse with password = %x %v", pw, err)
	}
	if pw, err := ParsePassword("10.0.0.1"); err != nil || !bytes.Equal(pw, []byte{10, 0, 0, 1}) {
		t.Errorf("ParsePassword(10.0.0.1) = %x %v", pw, err)
	}
	for _, bad := range []string{"secret", "::1", "01:02:03"} {
		if _, err := ParsePassword(bad); !errors.Is(err, ErrBadPassword) {
			t.Errorf("ParsePassword(%q) = %v, want ErrBadPassword", bad, err)
		}
	}
	if _, err := Packet(mac, []byte{1, 2, 3}); !errors.Is(err, ErrBadPassword) {
		t.Errorf("3-byte password: %v", err)
	}
	if _, err := Packet(net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}, nil); err == nil {
		t.Error("8-byte MAC accepted")
	}
	// A packet with one repetition changed is not a magic packet.
	p, _ = Packet(mac, nil)
	p[50] ^= 1
	if _, _, err := Parse(p); !errors.Is(err, ErrBadPacket) {
		t.Errorf("Parse of a damaged packet = %v, want ErrBadPacket", err)
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"198.18.0.1/24": "198.18.0.255", "198.18.3.7/22": "198.18.3.255", "198.19.0.9/30": "198.19.0.11",
		"198.18.0.1/15": "198.19.255.255",
	} {
		got, ok := Broadcast(netip.MustParsePrefix(in))
		if !ok || got.String() != want {
			t.Errorf("Broadcast(%s) = %v %v, want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"198.18.0.1/31", "198.18.0.1/32", "2001:db8::1/64"} {
		if got, ok := Broadcast(netip.MustParsePrefix(in)); ok {
			t.Errorf("Broadcast(%s) = %v, want none", in, got)
		}
	}
}

// TestSendLoopback sends to a UDP listener on loopback: the one
// destination kind that needs no namespace.
func TestSendLoopback(t *testing.T) {
	ln, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.LocalAddr().(*net.UDPAddr).Port
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 9}
	cfg := Config{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Port: port}
	sent, err := cfg.Send(context.Background(), mac)
	if err != nil || len(sent) != 1 || sent[0].MAC != mac.String() || sent[0].To != ln.LocalAddr().String() {
		t.Fatalf("Send = %+v, %v; want one packet to %s", sent, err, ln.LocalAddr())
	}
	buf := make([]byte, 200)
	n, _, err := ln.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := Parse(buf[:n]); err != nil || got.String() != mac.String() {
		t.Fatalf("received %x: %v %v", buf[:n], got, err)
	}
	if _, err := (Config{}).Send(context.Background(), mac); err == nil {
		t.Error("a config with no destination sent")
	}
}

func FuzzParse(f *testing.F) {
	p, _ := Packet(net.HardwareAddr{1, 2, 3, 4, 5, 6}, nil)
	f.Add(p)
	p, _ = Packet(net.HardwareAddr{1, 2, 3, 4, 5, 6}, []byte{9, 9, 9, 9})
	f.Add(p)
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		mac, pw, err := Parse(b)
		if err != nil {
			return
		}
		// What parses rebuilds to the same bytes.
		again, err := Packet(mac, pw)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("Parse(%x) = %v %x, which builds %x (%v)", b, mac, pw, again, err)
		}
	})
}
