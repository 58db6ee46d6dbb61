package main

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// writeReport writes the Markdown report and the SVG plot.
func writeReport(cfg *config, imgs map[string]*benchImage, results []result, took time.Duration) error {
	var b strings.Builder
	kernel, _ := exec.Command("uname", "-r").Output()
	fmt.Fprintf(&b, `# Fleet benchmark

Written by `+"`make bench`"+` on %s, in one run on one machine (%d cores, Linux %s,
%s) that took %s. Every number below comes from that run; rerun `+"`make bench`"+` to regenerate.

- Command: `+"`%s`"+`
- Links: R = **%d Mbit/s** per link, both directions (tc tbf on each veth end),
  every client and the server in its own network namespace on one bridge,
  addresses in 198.18.0.0/15. By arithmetic (not measured), Ethernet, IP
  and TCP headers take 4.6%% of each emulated link (a full frame is 1514
  bytes on the link for 1448 of payload), so no TCP method can go below
  about 1.05× its floor; udpcast is capped at 0.95 R.
- T_all: time until every healthy client holds a verified copy (the slow or
  killed client is not counted). Server sent: bytes on the server's link;
  client link: bytes into a healthy client's link, on average (both include
  protocol overhead). CPU: whole-machine average and busiest half-second
  during the run; a run at ≥95%% average is CPU-bound and marked so.
`, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(),
		took.Round(time.Second), strings.Join(os.Args, " "), cfg.rate/1e6)
	if img := imgs[""]; img != nil {
		rawSection(&b, cfg, img, results)
	}
	if slices.ContainsFunc(results, func(r result) bool { return strings.HasPrefix(r.Scenario, "slow peers") }) {
		b.WriteString(slowPeersMarkdown(cfg, results))
	}
	if slices.ContainsFunc(results, func(r result) bool { return strings.HasPrefix(r.Scenario, "two rooms") }) {
		b.WriteString(roomsMarkdown(results))
	}
	if len(cfg.fsKinds) > 0 && imgs[cfg.fsKinds[0]] != nil {
		fsSection(&b, cfg, imgs, results)
	}
	if len(cfg.captures) > 0 {
		b.WriteString(captureMarkdown(cfg, cfg.captures))
	}
	if cfg.cost != nil {
		b.WriteString(cfg.cost.markdown())
	}
	if cfg.mem != nil {
		b.WriteString(cfg.mem.markdown())
	}
	if err := os.WriteFile(cfg.out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(cfg.svg, []byte(plot(cfg, imgs, results)), 0o644)
}

func rawSection(b *strings.Builder, cfg *config, img *benchImage, results []result) {
	fmt.Fprintf(b, `
## Raw image

- Image: S = **%d MiB** of random data, one partition, %s (pxeswarm
  mktorrent's default for this size: about 2048 pieces, at least 256 KiB; a
  256 GB image gets 8 MiB pieces, 30,518 of them).
- Physical floor: T_min = S/R = **%.1f s**. Times are given as multiples of it.
- Methods, all against the same image and links: **pxeswarm** (`+"`pxeswarm seed`"+`
  with its tracker on the server, `+"`pxeswarm fetch`"+` on every client);
  **http** (Go's file server, `+"`curl`"+` on every client: the one-to-many copy);
  **udpcast** (`+"`udp-sender --broadcast --max-bitrate 0.95R`"+` / `+"`udp-receiver`"+`, the
  transport of Clonezilla and FOG; broadcast because this machine's kernel did not
  deliver udpcast's multicast rendezvous between namespaces, same protocol otherwise); **qbittorrent** (`+"`qbittorrent-nox`"+` 4.5,
  libtorrent-rasterbar 2.0, as the leechers against the same pxeswarm seeder and
  tracker: no DHT, PeX, LSD, uTP or encryption, unlimited upload slots, done when
  its run-on-completion program ran). `+"`--methods`"+` also takes **transmission**
  (`+"`transmission-cli`"+`, libtransmission).

| method | scenario | T_all | T_all/T_min | median/T_min | worst/T_min | server sent | client link | CPU avg (peak) | note |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
`, cfg.size>>20, img.pieces, cfg.tmin().Seconds())
	var rows []result
	for _, r := range results {
		// Slow peers run on faster links (their own section).
		if r.FS != "" || strings.HasPrefix(r.Scenario, "slow peers") {
			continue
		}
		rows = append(rows, r)
		if r.Note == "not supported" {
			fmt.Fprintf(b, "| %s | %s | | | | | | | | %s |\n", r.Method, r.Scenario, r.Note)
			continue
		}
		tall, ratio, med, worst := times(r, r.Floor)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %.2f×S | %s | %.0f%% (%.0f%%) | %s |\n", r.Method, r.Scenario, tall, ratio, med, worst,
			float64(r.ServerSent)/float64(r.Size), perS(r.ClientGot, r.Size), 100*r.CPUAvg, 100*r.CPUPeak, note(r))
	}
	fmt.Fprintf(b, "\nIn the README's form (T_all/T_min):\n\n")
	summary(b, rows, func(r result) float64 { return r.ratio(r.TAll, r.Floor) })
	fleetNote(b, cfg, rows)
	fmt.Fprintf(b, "\n![completion time against N](bench.svg)\n")
}

// fleetNote explains the fleet rows and compares each with the fleet's
// smallest N (the goal: N=64 and 100 no more than 5% above N=16).
func fleetNote(b *strings.Builder, cfg *config, rows []result) {
	var fleet []result
	for _, r := range rows {
		if r.Scenario == (scenario{kind: "fleet", n: r.N}).label() {
			fleet = append(fleet, r)
		}
	}
	if len(fleet) == 0 {
		return
	}
	fmt.Fprintf(b, `
The **fleet** rows run pxeswarm alone at more clients than the rest of the
table, at R = %d Mbit/s and S = %d MiB (T_min = %.1f s), so that N × R stays
near what this machine's two cores can move; their ratios are against that
T_min. A run whose CPU average reached 95%% is marked CPU-bound: its time is
the machine's limit, not the swarm's. A run stops at 4 × T_min.
`, cfg.fleetRate/1e6, cfg.fleetSize>>20, floorOf(cfg.fleetSize, cfg.fleetRate).Seconds())
	ref := fleet[0]
	for _, r := range fleet[1:] {
		if ref.TAll == 0 || r.TAll == 0 {
			continue
		}
		fmt.Fprintf(b, "- N=%d against N=%d: %+.0f%%%s\n", r.N, ref.N, 100*(r.TAll.Seconds()/ref.TAll.Seconds()-1),
			map[bool]string{true: " (CPU-bound)", false: ""}[r.CPUAvg >= 0.95])
	}
}

func fsSection(b *strings.Builder, cfg *config, imgs map[string]*benchImage, results []result) {
	fmt.Fprintf(b, `
## Filesystem images (used blocks)

Each image is one partition of S = **%d MiB** holding a real filesystem,
about %d%% of it used, fragmented as a used disk is: random files written
(ext4: `+"`mke2fs -d`"+`; NTFS: `+"`mkntfs -Q`"+` and `+"`ntfscp`"+`), every other one
deleted (`+"`debugfs rm`"+`) or emptied (`+"`ntfstruncate`"+`), then larger files
written into the holes (`+"`debugfs write`"+`, `+"`ntfscp`"+`, half of them over the
emptied NTFS files). Nothing is mounted. "Used" is what pxeswarm's used map
counts: the files, and the metadata (journal, inode tables, `+"`$MFT`"+`,
`+"`$LogFile`"+`, the NTFS backup boot sector).

| image | S | used | extents | S/R | used/R | pieces |
| --- | ---: | ---: | ---: | ---: | ---: | --- |
`, cfg.fsSize>>20, cfg.fsUsedPct)
	for _, k := range cfg.fsKinds {
		img := imgs[k]
		if img == nil {
			continue
		}
		fmt.Fprintf(b, "| %s | %d MiB | %.1f MiB (%.1f%%) | %d | %.1f s | %.1f s | %s |\n", k, img.size>>20, float64(img.used)/(1<<20),
			100*float64(img.used)/float64(img.size), len(img.usedExts), floorOf(img.size, cfg.rate).Seconds(), floorOf(img.used, cfg.rate).Seconds(), img.pieces)
	}
	fmt.Fprintf(b, `
Methods, side by side on the same image and links:
**pxeswarm** seeds the default torrent of `+"`pxeswarm mktorrent`"+` (the used
blocks only); **clonezilla** is Clonezilla's pipeline run as its commands:
`+"`partclone.extfs|partclone.ntfs -c -s IMAGE -o - | udp-sender --broadcast --max-bitrate 0.95R --min-receivers N`"+`
on the server and `+"`udp-receiver | partclone.X -r -s - -O TARGET`"+` on every
client, onto a target the image's size (Clonezilla would add a compressor,
which random files would not shrink); **http** and **qbittorrent** get the
raw image (`+"`mktorrent --raw`"+` for qBittorrent's torrent), as they know nothing of
filesystems. A copy is verified on every byte the filesystem uses (pxeswarm,
clonezilla: the rest of the target is free space) or on every byte (http,
qbittorrent). Floors: S/R (every byte over one link) and used/R (the used
bytes over one link); the median and worst columns are against the method's
own floor (used/R for pxeswarm and clonezilla, S/R for the raw methods).
The raw-image methods run sparingly, as they do not read the filesystem
and only S matters to them: homogeneous only, HTTP at the smallest N
(N×S/R by construction), qBittorrent at the largest, and on the first
image only unless `+"`--fs-raw-every`"+` is given.

| method | scenario | T_all | T_all/(S/R) | T_all/(used/R) | median, worst (own floor) | server sent | client link | CPU avg (peak) | note |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
`)
	var rows []result
	for _, r := range results {
		if r.FS == "" {
			continue
		}
		rows = append(rows, r)
		if strings.HasPrefix(r.Note, "not ") {
			fmt.Fprintf(b, "| %s | %s | | | | | | | | %s |\n", r.Method, r.Scenario, r.Note)
			continue
		}
		tall, ratio, med, worst := times(r, r.Floor)
		_, _, med, worst = times(r, r.RunFloor)
		used := "—"
		if r.TAll > 0 {
			used = fmt.Sprintf("**%.2f**", r.usedRatio(r.TAll))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s, %s | %.2f×used | %s | %.0f%% (%.0f%%) | %s |\n", r.Method, r.Scenario, tall, ratio, used, med, worst,
			float64(r.ServerSent)/float64(r.Used), perS(r.ClientGot, r.Used)+"used", 100*r.CPUAvg, 100*r.CPUPeak, note(r))
	}
	fmt.Fprintf(b, "\nIn the README's form (T_all/(used/R), and in brackets T_all/(S/R)):\n\n")
	summary(b, rows, func(r result) float64 { return r.usedRatio(r.TAll) }, func(r result) float64 { return r.ratio(r.TAll, r.Floor) })
}

// times formats T_all and its ratio, median and worst against floor.
func times(r result, floor time.Duration) (tall, ratio, med, worst string) {
	tall, ratio, med, worst = "—", "—", "—", "—"
	if r.TAll > 0 {
		tall = fmt.Sprintf("%.1f s", r.TAll.Seconds())
		ratio = fmt.Sprintf("**%.2f**", r.ratio(r.TAll, floor))
	}
	if r.Median > 0 {
		med = fmt.Sprintf("%.2f", r.ratio(r.Median, floor))
		worst = fmt.Sprintf("%.2f", r.ratio(r.Worst, floor))
	}
	return
}

// perS formats bytes as a multiple of n ("1.03×").
func perS(bytes float64, n int64) string {
	if bytes == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", bytes/float64(n))
}

func note(r result) string {
	n := r.Note
	if r.ServedPlainly > 0 {
		n = strings.TrimPrefix(fmt.Sprintf("%s; the seeder served %d peers plainly (every piece)", n, r.ServedPlainly), "; ")
	}
	if r.CPUAvg >= 0.95 {
		n = strings.TrimPrefix(n+"; CPU-bound", "; ")
	}
	if r.Done > 0 && !r.Verified && !strings.Contains(n, "differs") && r.TAll > 0 {
		n += " NOT VERIFIED"
	}
	return n
}

// summary writes one row per scenario and one column per method, each
// cell the ratios of T_all (the first, then the others in brackets).
func summary(b *strings.Builder, rows []result, ratios ...func(result) float64) {
	var scens, methods []string
	cells := map[[2]string]string{}
	for _, r := range rows {
		if !slices.Contains(scens, r.Scenario) {
			scens = append(scens, r.Scenario)
		}
		if !slices.Contains(methods, r.Method) {
			methods = append(methods, r.Method)
		}
		var c string
		switch {
		case r.TAll > 0 && r.Verified:
			c = fmt.Sprintf("%.2f", ratios[0](r))
			for _, f := range ratios[1:] {
				c += fmt.Sprintf(" (%.2f)", f(r))
			}
		case r.Note == "not supported":
			c = "—"
		case strings.HasPrefix(r.Note, "not run"):
			c = "not run"
		case strings.HasPrefix(r.Note, "failed"):
			c = "failed"
		case r.TAll > 0:
			c = "not verified"
		case r.Cap > 0:
			c = fmt.Sprintf("not done at %.1f", r.Cap)
		default:
			c = "not done"
		}
		cells[[2]string{r.Scenario, r.Method}] = c
	}
	fmt.Fprintf(b, "| scenario | %s |\n| --- |%s\n", strings.Join(methods, " | "), strings.Repeat(" ---: |", len(methods)))
	for _, s := range scens {
		fmt.Fprintf(b, "| %s |", s)
		for _, m := range methods {
			fmt.Fprintf(b, " %s |", cells[[2]string{s, m}])
		}
		b.WriteString("\n")
	}
}

var colors = []string{"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"}

// plot draws, as a small self-contained SVG, T_all/T_min against N for
// the homogeneous runs on the raw image (a line per method) and, below
// it, T_all against both floors for the filesystem runs (a bar per
// method and scenario).
func plot(cfg *config, imgs map[string]*benchImage, results []result) string {
	const W, panel = 640, 400
	var raw, fs []result
	for _, r := range results {
		if r.FS == "" {
			raw = append(raw, r)
		} else {
			fs = append(fs, r)
		}
	}
	h, y0 := 0, 0
	if imgs[""] != nil {
		h += panel
	}
	if len(fs) > 0 {
		h += panel + 40
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, h)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	if imgs[""] != nil {
		plotRaw(&s, cfg, raw)
		y0 = panel
	}
	if len(fs) > 0 {
		plotFS(&s, cfg, imgs, fs, y0)
	}
	s.WriteString("</svg>\n")
	return s.String()
}

func plotRaw(s *strings.Builder, cfg *config, results []result) {
	const W, H, L, R, T, B = 640, 400, 60, 150, 30, 50
	tmin := cfg.tmin()
	series := map[string][][2]float64{}
	var order []string
	maxY, maxN := 2.0, 1
	cpuBound := map[[2]float64]bool{}
	for _, r := range results {
		name, y := r.Method, r.ratio(r.TAll, tmin)
		switch {
		case r.TAll == 0:
			continue
		case strings.HasPrefix(r.Scenario, "homogeneous"):
		case r.Scenario == scenario{kind: "fleet", n: r.N}.label():
			// The fleet rows run at their own R and S: against their own
			// floor, as their own line.
			name = fmt.Sprintf("%s, R=%d S=%dMiB", r.Method, cfg.fleetRate/1e6, cfg.fleetSize>>20)
			y = r.ratio(r.TAll, r.Floor)
		default:
			continue
		}
		if _, ok := series[name]; !ok {
			order = append(order, name)
		}
		pt := [2]float64{float64(r.N), y}
		series[name] = append(series[name], pt)
		cpuBound[pt] = cpuBound[pt] || r.CPUAvg >= 0.95
		maxY = max(maxY, y)
		maxN = max(maxN, r.N)
	}
	x := func(n float64) float64 { return L + n/float64(maxN)*(W-L-R) }
	y := func(v float64) float64 { return H - B - v/maxY*(H-T-B) }
	fmt.Fprintf(s, `<text x="%d" y="18" font-size="14">Time until every client is imaged (T_all / T_min), R=%d Mbit/s, S=%d MiB</text>`+"\n", L, cfg.rate/1e6, cfg.size>>20)
	fmt.Fprintf(s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", L, H-B, W-R, H-B)
	fmt.Fprintf(s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", L, T, L, H-B)
	ticks := slices.Concat(cfg.ns, cfg.fleetNs)
	slices.Sort(ticks)
	for _, n := range slices.Compact(ticks) {
		fmt.Fprintf(s, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(n)), H-B+18, n)
	}
	fmt.Fprintf(s, `<text x="%d" y="%d" text-anchor="middle">clients N</text>`+"\n", (L+W-R)/2, H-12)
	step := 1.0
	for maxY/step > 10 {
		step *= 2
	}
	for v := 0.0; v <= maxY+1e-9; v += step {
		fmt.Fprintf(s, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#ddd"/><text x="%d" y="%.0f" text-anchor="end">%g×</text>`+"\n", L, y(v), W-R, y(v), L-6, y(v)+4, v)
	}
	for i, m := range order {
		c := colors[i%len(colors)]
		var pts []string
		for _, p := range series[m] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
			fill := c
			if cpuBound[p] {
				fill = "white" // the machine's CPUs, not the swarm, set this point
			}
			fmt.Fprintf(s, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s" stroke="%s"/>`+"\n", x(p[0]), y(p[1]), fill, c)
		}
		fmt.Fprintf(s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
		fmt.Fprintf(s, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", W-R+10, T+20+18*i, c, m)
	}
	if len(cpuBound) > 0 && slices.Contains(slices.Collect(maps.Values(cpuBound)), true) {
		fmt.Fprintf(s, `<text x="%d" y="%d" font-size="10">hollow: CPU-bound run</text>`+"\n", W-R+10, T+20+18*len(order))
	}
}

// plotFS draws a bar per filesystem run that finished: T_all/(used/R),
// with the used/R floor at 1 and each image's S/R floor as a dashed
// line; a bar past the top is cut and carries its value.
func plotFS(s *strings.Builder, cfg *config, imgs map[string]*benchImage, results []result, y0 int) {
	const W, H, L, R, T, B = 640, 440, 60, 150, 40, 90
	var scens, methods []string
	for _, r := range results {
		if strings.HasPrefix(r.Note, "not ") {
			continue
		}
		if !slices.Contains(scens, r.Scenario) {
			scens = append(scens, r.Scenario)
		}
		if !slices.Contains(methods, r.Method) {
			methods = append(methods, r.Method)
		}
	}
	// The scale reaches a little past the S/R floor (S/used, about 7 at
	// 15% used): enough to show every used-block method and the raw ones
	// next to their floor.
	maxY := 2.0
	for _, img := range imgs {
		if img.fs != "" {
			maxY = max(maxY, 1.25*float64(img.size)/float64(img.used))
		}
	}
	y := func(v float64) float64 { return float64(y0) + H - B - min(v, maxY)/maxY*(H-T-B) }
	fmt.Fprintf(s, `<text x="%d" y="%d" font-size="14">Filesystem images (%d MiB, about %d%% used): T_all / (used/R), R=%d Mbit/s</text>`+"\n", L, y0+22, cfg.fsSize>>20, cfg.fsUsedPct, cfg.rate/1e6)
	fmt.Fprintf(s, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="black"/>`+"\n", L, y(0), W-R, y(0))
	fmt.Fprintf(s, `<line x1="%d" y1="%d" x2="%d" y2="%.0f" stroke="black"/>`+"\n", L, y0+T, L, y(0))
	step := 1.0
	for maxY/step > 10 {
		step *= 2
	}
	for v := 0.0; v <= maxY+1e-9; v += step {
		fmt.Fprintf(s, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#ddd"/><text x="%d" y="%.0f" text-anchor="end">%g×</text>`+"\n", L, y(v), W-R, y(v), L-6, y(v)+4, v)
	}
	fmt.Fprintf(s, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="black" stroke-dasharray="2,3"/><text x="%d" y="%.0f">used/R</text>`+"\n", L, y(1), W-R, y(1), W-R+4, y(1)+4)
	groupW := float64(W-L-R) / float64(max(1, len(scens)))
	barW := groupW * 0.8 / float64(max(1, len(methods)))
	for g, sc := range scens {
		gx := float64(L) + groupW*float64(g)
		var fsKind string
		for _, r := range results {
			if r.Scenario != sc || strings.HasPrefix(r.Note, "not ") {
				continue
			}
			fsKind = r.FS
			i := slices.Index(methods, r.Method)
			bx := gx + groupW*0.1 + barW*float64(i)
			c := colors[i%len(colors)]
			if r.TAll == 0 {
				fmt.Fprintf(s, `<text x="%.1f" y="%.0f" font-size="9" fill="%s" text-anchor="middle">✗</text>`+"\n", bx+barW/2, y(0)-4, c)
				continue
			}
			v := r.usedRatio(r.TAll)
			fmt.Fprintf(s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", bx, y(v), barW-1, y(0)-y(v), c)
			fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle">%.2f</text>`+"\n", bx+barW/2, y(v)-3, v)
		}
		if img := imgs[fsKind]; img != nil {
			sr := float64(img.size) / float64(img.used)
			fmt.Fprintf(s, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#900" stroke-dasharray="5,3"/><text x="%.1f" y="%.0f" font-size="9" fill="#900">S/R</text>`+"\n",
				gx, y(sr), gx+groupW, y(sr), gx+2, y(sr)-3)
		}
		label := strings.Replace(sc, "one slow client (R/10)", "slow client", 1)
		fmt.Fprintf(s, `<text x="%.1f" y="%.0f" font-size="10" text-anchor="end" transform="rotate(-30 %.1f %.0f)">%s</text>`+"\n", gx+groupW/2, y(0)+14, gx+groupW/2, y(0)+14, label)
	}
	for i, m := range methods {
		fmt.Fprintf(s, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", W-R+10, y0+T+30+18*i, colors[i%len(colors)], m)
	}
}

// slowPeersMarkdown is the slow-peers section: every client held to a
// share of one core by a CPU cgroup, against the homogeneous runs of
// the same method. Server copies and the share the clients got from
// each other are what the request policy changes.
func slowPeersMarkdown(cfg *config, results []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
## Slow peers

- Every client runs in its own CPU cgroup holding it to %.0f%% of one core
  (100 ms period: stopped for the rest of each period), as terminals that
  answer slowly (`+"`make demo`"+`'s machines under software emulation, weak
  CPUs). The image host is not limited. Same image as above; every link at
  %d Mbit/s (the server's at %.0f×), so the clients' CPU, not the links,
  limits the transfer, as in `+"`make demo`"+`, whose links are not shaped:
  T_all/T_min is against that rate and says how far the CPU is the limit.
  The homogeneous rows are at R as above.
- Server copies: the server link's bytes / S (headers included). From
  peers: the share of the clients' useful bytes that came from other
  clients (their own count, payload only). Stopped: share of the run the
  average client was throttled by its limit (the kernel sums it over the cores' run queues, so it can pass 100%%). Load: the 1-minute load average at
  the run's end.

| method | scenario | T_all | T_all/T_min | median/T_min | server copies | from peers | wasted | stopped | CPU avg (peak) | load | note |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
`, 100*cfg.slowCPU, cfg.slowRate/1e6, cfg.slowServerLink)
	for _, r := range results {
		if r.FS != "" || !(strings.HasPrefix(r.Scenario, "slow peers") || strings.HasPrefix(r.Scenario, "homogeneous")) {
			continue
		}
		tall, ratio, med, _ := times(r, r.Floor)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.2f | %.0f%% | %.2f×S | %.0f%% | %.0f%% (%.0f%%) | %.1f | %s |\n", r.Method, r.Scenario, tall, ratio, med,
			float64(r.ServerSent)/float64(r.Size), 100*r.FromPeers, r.Wasted, 100*r.Throttled, 100*r.CPUAvg, 100*r.CPUPeak, r.Load, note(r))
	}
	return b.String()
}

// roomsMarkdown is the two-rooms section: what crossed the router into
// each room and each room's T_all (issue 20's goal: about one copy per
// room, each room ≤ 1.20 × T_min).
func roomsMarkdown(results []result) string {
	var b strings.Builder
	b.WriteString(`
## Two rooms

- Two rooms, each a bridge with its own /24 (198.18.1.0/24, 198.18.2.0/24),
  behind a router namespace; the image host on a third segment behind the
  same router. Every link is shaped to R, the rooms' uplinks to the router
  too. The tracker's default policy gives each machine the peers of its
  own /24 first, and once its /24 holds 4 other peers, of no other room's
  machines, only the image host (tracker.DefaultPolicy.LocalEnough). Across the router: the bytes the router sent into the
  room, headers included, / S.

| method | scenario | T_all/T_min | room A T_all/T_min | room B T_all/T_min | into room A | into room B | server copies | CPU avg (peak) | load | note |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
`)
	for _, r := range results {
		if !strings.HasPrefix(r.Scenario, "two rooms") {
			continue
		}
		_, ratio, _, _ := times(r, r.Floor)
		room := func(i int) string {
			if r.RoomTAll[i] == 0 {
				return "—"
			}
			return fmt.Sprintf("%.2f", r.ratio(r.RoomTAll[i], r.Floor))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.2f×S | %.2f×S | %.2f | %.0f%% (%.0f%%) | %.1f | %s |\n", r.Method, r.Scenario, ratio, room(0), room(1),
			float64(r.RoomIn[0])/float64(r.Size), float64(r.RoomIn[1])/float64(r.Size), float64(r.ServerSent)/float64(r.Size), 100*r.CPUAvg, 100*r.CPUPeak, r.Load, note(r))
	}
	return b.String()
}
