package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The kernel's IPv4 neighbour (ARP) table is one table for every network
// namespace: its garbage-collection thresholds count the entries of all
// of them. A lab of N hosts on one LAN holds up to about N² entries (each
// host learns every peer it dials), and past gc_thresh3 (1024 by default)
// the kernel drops new entries ("neighbor table overflow!" in dmesg), so
// the hosts whose entries came last cannot reach anybody. At N=100 that
// left 48 clients with no peer at all, which a real LAN of 100 machines,
// each with its own table, never sees. So a lab raises the thresholds for
// its lifetime and puts the host's values back when it closes.
const neighDir = "/proc/sys/net/ipv4/neigh/default/"

// neighSizing is the thresholds a lab raised, to put back on close.
type neighSizing map[string]int

// sizeNeighbourTable raises gc_thresh2 and gc_thresh3 so hosts hosts can
// each hold an entry for every other, and returns what to put back. It
// leaves thresholds that are already large enough alone.
func sizeNeighbourTable(hosts int) (neighSizing, error) {
	need := hosts * (hosts + 2)
	want := map[string]int{"gc_thresh2": need, "gc_thresh3": 2 * need}
	old := neighSizing{}
	for _, name := range []string{"gc_thresh2", "gc_thresh3"} {
		cur, err := readSysctlInt(neighDir + name)
		if err != nil {
			return old, err
		}
		if cur >= want[name] {
			continue
		}
		if err := os.WriteFile(neighDir+name, []byte(strconv.Itoa(want[name])), 0o644); err != nil {
			old.restore()
			return nil, fmt.Errorf("raising the kernel's ARP table for a lab of %d hosts: %w (the bench needs root)", hosts, err)
		}
		old[name] = cur
	}
	return old, nil
}

// restore puts back the thresholds sizeNeighbourTable raised. gc_thresh3
// goes first: the kernel keeps thresh2 ≤ thresh3 only by convention, but
// lowering in that order never passes through thresh2 > thresh3.
func (s neighSizing) restore() {
	for _, name := range []string{"gc_thresh3", "gc_thresh2"} {
		if v, ok := s[name]; ok {
			os.WriteFile(neighDir+name, []byte(strconv.Itoa(v)), 0o644)
		}
	}
}

func readSysctlInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return v, nil
}
