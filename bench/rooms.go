package main

import (
	"fmt"
	"os"
)

// newRoomsLab builds two rooms behind a router: each room is a bridge
// (its own /24, 198.18.1.0/24 and 198.18.2.0/24, client k in room
// (k-1)%2), the router namespace joins both rooms and the image host's
// segment (198.18.0.0/24), routing between them. Every link is shaped
// to rate in both directions: the clients', the image host's and each
// room's uplink to the router. What the router sends into a room is
// what crossed it for that room (roomIn).
func newRoomsLab(n int, rate int64) (*lab, error) {
	l := &lab{prefix: fmt.Sprintf("pxr%d", os.Getpid()%100000), n: n, rate: rate, rooms: 2, ports: map[string][2]string{}}
	fail := func(err error) (*lab, error) { l.close(); return nil, err }
	var err error
	if l.neigh, err = sizeNeighbourTable(n + 2); err != nil {
		return nil, err
	}
	rt := l.ns("rt")
	for _, h := range []string{"rt", "swa", "swb"} {
		if err := sh("ip", "netns", "add", l.ns(h)); err != nil {
			return fail(err)
		}
		l.hosts = append(l.hosts, h)
		if err := sh("ip", "-n", l.ns(h), "link", "set", "lo", "up"); err != nil {
			return fail(err)
		}
	}
	if err := sh("ip", "netns", "exec", rt, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return fail(err)
	}
	lk := link{rateBits: rate}
	// pair joins namespace a's device da to b's db, both up and shaped.
	pair := func(a, da, b, db string) error {
		tmpA, tmpB := l.prefix+"x", l.prefix+"y"
		for _, s := range [][]string{
			{"ip", "link", "add", tmpA, "netns", a, "type", "veth", "peer", "name", tmpB, "netns", b},
			{"ip", "-n", a, "link", "set", tmpA, "name", da},
			{"ip", "-n", b, "link", "set", tmpB, "name", db},
			{"ip", "-n", a, "link", "set", da, "up"},
			{"ip", "-n", b, "link", "set", db, "up"},
		} {
			if err := sh(s...); err != nil {
				return err
			}
		}
		if err := shape(a, da, lk); err != nil {
			return err
		}
		return shape(b, db, lk)
	}
	// The image host's segment: a point-to-point link to the router.
	srv := l.ns("srv")
	if err := sh("ip", "netns", "add", srv); err != nil {
		return fail(err)
	}
	l.hosts = append(l.hosts, "srv")
	sh("ip", "-n", srv, "link", "set", "lo", "up")
	if err := pair(srv, "eth0", rt, "srv0"); err != nil {
		return fail(err)
	}
	l.ports["srv"] = [2]string{rt, "srv0"}
	for _, s := range [][]string{
		{"ip", "-n", srv, "addr", "add", serverIP() + "/24", "dev", "eth0"},
		{"ip", "-n", srv, "route", "add", "default", "via", "198.18.0.254"},
		{"ip", "-n", rt, "addr", "add", "198.18.0.254/24", "dev", "srv0"},
	} {
		if err := sh(s...); err != nil {
			return fail(err)
		}
	}
	for room, h := range []string{"swa", "swb"} {
		sw := l.ns(h)
		gw := fmt.Sprintf("198.18.%d.254", 1+room)
		if err := pair(rt, roomPort(room), sw, "uplink"); err != nil {
			return fail(err)
		}
		for _, s := range [][]string{
			{"ip", "-n", sw, "link", "add", "br0", "type", "bridge"},
			{"ip", "-n", sw, "link", "set", "br0", "up"},
			{"ip", "-n", sw, "link", "set", "uplink", "master", "br0"},
			{"ip", "-n", rt, "addr", "add", gw + "/24", "dev", roomPort(room)},
		} {
			if err := sh(s...); err != nil {
				return fail(err)
			}
		}
	}
	for k := 1; k <= n; k++ {
		h, room := clientName(k), l.room(k)
		ns, sw := l.ns(h), l.ns([]string{"swa", "swb"}[room])
		if err := sh("ip", "netns", "add", ns); err != nil {
			return fail(err)
		}
		l.hosts = append(l.hosts, h)
		sh("ip", "-n", ns, "link", "set", "lo", "up")
		port := "p" + h
		if err := pair(ns, "eth0", sw, port); err != nil {
			return fail(err)
		}
		l.ports[h] = [2]string{sw, port}
		for _, s := range [][]string{
			{"ip", "-n", sw, "link", "set", port, "master", "br0"},
			{"ip", "-n", ns, "addr", "add", l.clientIP(k) + "/24", "dev", "eth0"},
			{"ip", "-n", ns, "route", "add", "default", "via", fmt.Sprintf("198.18.%d.254", 1+room)},
		} {
			if err := sh(s...); err != nil {
				return fail(err)
			}
		}
	}
	return l, nil
}

// roomPort is the router's device toward a room.
func roomPort(room int) string { return fmt.Sprintf("room%d", room) }

// roomIn is the bytes the router has sent into a room so far (headers
// included): what crossed it for that room.
func (l *lab) roomIn(room int) int64 { return devBytes(l.ns("rt"), roomPort(room), false) }
