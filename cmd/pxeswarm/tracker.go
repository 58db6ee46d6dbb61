package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/tracker"
)

func runTracker(ctx context.Context, args []string) error {
	fs := newFlagSet("tracker", "--listen ADDR --publish X.torrent... [flags]", `
Run the LAN tracker on its own. It answers announces (BEP 3, compact peers)
and scrapes (BEP 48) for published images only, and serves swarm statistics
as JSON at /stats.

Example:
  pxeswarm tracker --listen :8080 --publish win11.torrent --group room101=198.18.1.0/24`)
	fs.section("tracker")
	listen := fs.String("listen", ":8080", "address to listen on")
	var publish, groups listFlag
	fs.Var(&publish, "publish", "torrent file whose info-hash is allowed; repeatable")
	fs.Var(&groups, "group", "NAME=CIDR[+CIDR...]: peers in a group get each other first; repeatable")
	interval := fs.Duration("interval", tracker.DefaultInterval, "announce interval told to peers")
	fs.note("interval")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg := tracker.Config{Listen: *listen, Interval: *interval}
	for _, p := range publish {
		im, err := imager.LoadFile(p)
		if err != nil {
			return err
		}
		cfg.Published = append(cfg.Published, tracker.Published{InfoHash: im.InfoHash, Name: im.Name})
	}
	for _, g := range groups {
		grp, err := parseGroup(g)
		if err != nil {
			return err
		}
		cfg.Groups = append(cfg.Groups, grp)
	}
	if len(cfg.Published) == 0 {
		fs.FlagSet.Output().Write([]byte("pxeswarm tracker: warning: nothing published; every announce will be refused\n"))
	}
	return cfg.Start(ctx, fs.logger())
}

func parseGroup(s string) (tracker.Group, error) {
	name, cidrs, ok := strings.Cut(s, "=")
	if !ok || name == "" || cidrs == "" {
		return tracker.Group{}, fmt.Errorf("group %q: want NAME=CIDR[+CIDR...], e.g. room101=198.18.1.0/24", s)
	}
	g := tracker.Group{Name: name}
	for _, c := range strings.Split(cidrs, "+") {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return g, fmt.Errorf("group %q: %w", s, err)
		}
		g.Prefixes = append(g.Prefixes, p.Masked())
	}
	return g, nil
}
