package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// lab is a simulated LAN: a switch namespace with a bridge, a server
// namespace and N client namespaces, each joined to the bridge by a veth
// pair shaped to the link rate in both directions. Addresses come from
// 198.18.0.0/15 only; the server is 198.18.0.1, client k is 198.18.1.k.
type lab struct {
	prefix string
	n      int
	rate   int64 // bits per second
	hosts  []string
	// rooms is 0 for the one-bridge LAN; 2 for two rooms behind a
	// router (newRoomsLab), client k in room (k-1)%2.
	rooms int
	ports map[string][2]string // host → its port: namespace, device
	// neigh is the ARP table thresholds the lab raised (neigh.go).
	neigh neighSizing
}

// link describes one host's link, for scenarios.
type link struct {
	rateBits int64
	lossPct  float64
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (l *lab) ns(h string) string { return l.prefix + "-" + h }

func serverIP() string        { return "198.18.0.1" }
func clientName(k int) string { return fmt.Sprintf("c%d", k) }

// clientIP is client k's address: 198.18.1.k on the one-bridge LAN;
// 198.18.(1+room).k with two rooms, one /24 each.
func (l *lab) clientIP(k int) string {
	if l.rooms > 0 {
		return fmt.Sprintf("198.18.%d.%d", 1+l.room(k), k)
	}
	return fmt.Sprintf("198.18.1.%d", k)
}

// room is client k's room (0 on the one-bridge LAN).
func (l *lab) room(k int) int {
	if l.rooms == 0 {
		return 0
	}
	return (k - 1) % l.rooms
}

// newLab builds the namespaces. links[k] overrides client k's link
// (1-based), links[0] the server's.
func newLab(n int, rate int64, links map[int]link) (*lab, error) {
	l := &lab{prefix: fmt.Sprintf("pxb%d", os.Getpid()%100000), n: n, rate: rate, ports: map[string][2]string{}}
	var err error
	if l.neigh, err = sizeNeighbourTable(n + 1); err != nil {
		return nil, err
	}
	sw := l.ns("sw")
	if err := sh("ip", "netns", "add", sw); err != nil {
		l.close()
		return nil, err
	}
	l.hosts = append(l.hosts, "sw")
	steps := [][]string{
		{"ip", "-n", sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", sw, "link", "set", "br0", "up"},
		{"ip", "-n", sw, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := sh(s...); err != nil {
			l.close()
			return nil, err
		}
	}
	add := func(h, ip string, lk link) error {
		ns := l.ns(h)
		if err := sh("ip", "netns", "add", ns); err != nil {
			return err
		}
		l.hosts = append(l.hosts, h)
		in, out := l.prefix+h+"i", l.prefix+h+"o" // short names: ≤15 bytes
		l.ports[h] = [2]string{sw, out}
		for _, s := range [][]string{
			{"ip", "link", "add", in, "netns", ns, "type", "veth", "peer", "name", out, "netns", sw},
			{"ip", "-n", ns, "link", "set", in, "name", "eth0"},
			{"ip", "-n", ns, "addr", "add", ip + "/15", "brd", "+", "dev", "eth0"},
			{"ip", "-n", ns, "link", "set", "eth0", "up"},
			{"ip", "-n", ns, "link", "set", "lo", "up"},
			{"ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"},
			{"ip", "-n", sw, "link", "set", out, "master", "br0"},
			{"ip", "-n", sw, "link", "set", out, "up"},
		} {
			if err := sh(s...); err != nil {
				return err
			}
		}
		if err := shape(ns, "eth0", lk); err != nil {
			return err
		}
		if lk.lossPct > 0 {
			if err := lossy(ns, "eth0", sw, out, lk.lossPct); err != nil {
				return err
			}
		}
		return shape(sw, out, lk)
	}
	srv := link{rateBits: rate}
	if o, ok := links[0]; ok {
		srv = o
	}
	if err := add("srv", serverIP(), srv); err != nil {
		l.close()
		return nil, err
	}
	for k := 1; k <= n; k++ {
		lk := link{rateBits: rate}
		if o, ok := links[k]; ok {
			lk = o
		}
		if err := add(clientName(k), l.clientIP(k), lk); err != nil {
			l.close()
			return nil, err
		}
	}
	return l, nil
}

// shape limits dev's egress to the link rate with tbf. Shaping both veth
// ends shapes both directions.
func shape(ns, dev string, lk link) error {
	rate := fmt.Sprintf("%dbit", lk.rateBits)
	// burst ≥ rate/HZ and ≥ a GSO packet; limit ≈ 20 ms of queue.
	burst := max(lk.rateBits/8/100, 128<<10)
	limit := max(lk.rateBits/8/50, 256<<10)
	return sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
		"burst", fmt.Sprint(burst), "limit", fmt.Sprint(limit))
}

// lossy drops pct% of the packets on a host's link in both directions with
// nftables (numgen random), where a wire would lose them: on the ingress of
// the host's eth0 (what reaches the host) and of its port on the switch
// (what leaves it). netem would be the usual tool, but this machine's kernel
// has no sch_netem. Dropping in the host's own output hook instead made
// local UDP senders fail with EPERM, which no real link does (udp-receiver
// quit on it).
func lossy(ns, dev, sw, port string, pct float64) error {
	permille := fmt.Sprint(int(pct * 10))
	for _, end := range []struct{ ns, dev string }{{ns, dev}, {sw, port}} {
		chain := "{ type filter hook ingress device " + end.dev + " priority 0; }"
		for _, cmd := range [][]string{
			{"add", "table", "netdev", "lossy"},
			{"add", "chain", "netdev", "lossy", end.dev, chain},
			{"add", "rule", "netdev", "lossy", end.dev, "numgen", "random", "mod", "1000", "<", permille, "drop"},
		} {
			if err := sh(append([]string{"ip", "netns", "exec", end.ns, "nft"}, cmd...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *lab) close() {
	for _, h := range l.hosts {
		exec.Command("ip", "netns", "del", l.ns(h)).Run()
	}
	l.hosts = nil
	l.neigh.restore()
	l.neigh = nil
}

// command runs name in host h's namespace.
func (l *lab) command(ctx context.Context, h string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns(h), name}, args...)...)
}

// serverSent is the bytes the server's link has carried out so far,
// read on the switch side of its veth (what the switch received from it).
func (l *lab) serverSent() int64 { return l.portBytes("srv", true) }

// clientGot is the bytes client k's link has carried in so far, read on
// the switch side of its veth (what the switch sent it), headers included.
func (l *lab) clientGot(k int) int64 { return l.portBytes(clientName(k), false) }

// portBytes reads host h's port on the switch: the bytes it received
// (rx: what h sent) or transmitted (what h was sent).
func (l *lab) portBytes(h string, rx bool) int64 {
	p, ok := l.ports[h]
	if !ok {
		return 0
	}
	return devBytes(p[0], p[1], rx)
}

// devBytes reads a device's counters in namespace ns: received (rx) or
// transmitted bytes.
func devBytes(ns, dev string, rx bool) int64 {
	out, err := exec.Command("ip", "-n", ns, "-s", "-j", "link", "show", dev).Output()
	if err != nil {
		return 0
	}
	type dir struct {
		Bytes int64 `json:"bytes"`
	}
	var links []struct {
		Stats64 struct {
			Rx dir `json:"rx"`
			Tx dir `json:"tx"`
		} `json:"stats64"`
	}
	if json.Unmarshal(out, &links) != nil || len(links) == 0 {
		return 0
	}
	if rx {
		return links[0].Stats64.Rx.Bytes
	}
	return links[0].Stats64.Tx.Bytes
}

// cpuSample reads /proc/stat's total and idle jiffies.
func cpuSample() (total, idle int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		var n int64
		fmt.Sscan(v, &n)
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return
}

// cpuMeter samples CPU use every 500 ms and keeps the busiest second.
type cpuMeter struct {
	stop chan struct{}
	done chan struct{}
	avg  float64
	peak float64
}

func startCPU() *cpuMeter {
	m := &cpuMeter{stop: make(chan struct{}), done: make(chan struct{})}
	t0, i0 := cpuSample()
	go func() {
		defer close(m.done)
		lt, li := t0, i0
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-m.stop:
				t, i := cpuSample()
				if t > t0 {
					m.avg = 1 - float64(i-i0)/float64(t-t0)
				}
				return
			case <-tk.C:
				t, i := cpuSample()
				if t > lt {
					m.peak = max(m.peak, 1-float64(i-li)/float64(t-lt))
				}
				lt, li = t, i
			}
		}
	}()
	return m
}

func (m *cpuMeter) end() (avg, peak float64) {
	close(m.stop)
	<-m.done
	return m.avg, m.peak
}
