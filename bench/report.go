package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// writeReport writes the Markdown table and the SVG plot.
func writeReport(cfg *config, img *benchImage, results []result, took time.Duration) error {
	tmin := cfg.tmin()
	var b strings.Builder
	kernel, _ := exec.Command("uname", "-r").Output()
	fmt.Fprintf(&b, `# Fleet benchmark

Written by `+"`make bench`"+` on %s, in one run on one machine (%d cores, Linux %s,
%s) that took %s. Every number below comes from that run; rerun `+"`make bench`"+` to regenerate.

- Links: R = **%d Mbit/s** per link, both directions (tc tbf on each veth end),
  every client and the server in its own network namespace on one bridge,
  addresses in 198.18.0.0/15.
- Image: S = **%d MiB** of random data, one partition, %s (pxeswarm
  mktorrent's default for this size: about 2048 pieces, at least 256 KiB; a
  256 GB image gets 8 MiB pieces, 30,518 of them).
- Physical floor: T_min = S/R = **%.1f s**. Times are given as multiples of it.
  T_min counts image bytes only. By arithmetic (not measured), Ethernet, IP
  and TCP headers take 4.6%% of each emulated link (a full frame is 1514
  bytes on the link for 1448 of payload), so no TCP method can go below
  about 1.05; udpcast is capped at 0.95 R.
- Command: `+"`%s`"+`
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
- T_all: time until every healthy client holds a verified copy (the slow or
  killed client is not counted). Server sent: bytes on the server's link, as a
  multiple of S (includes protocol overhead). CPU: whole-machine average and
  busiest half-second during the run; a run at ≥95%% average is CPU-bound and
  marked so.

| method | scenario | T_all | T_all/T_min | median/T_min | worst/T_min | server sent | CPU avg (peak) | note |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
`, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(),
		took.Round(time.Second), cfg.rate/1e6, cfg.size>>20, img.pieces, tmin.Seconds(), strings.Join(os.Args, " "))
	for _, r := range results {
		note := r.Note
		if r.CPUAvg >= 0.95 {
			note = strings.TrimPrefix(note+"; CPU-bound", "; ")
		}
		if r.Done > 0 && !r.Verified && !strings.Contains(note, "differs") && r.TAll > 0 {
			note += " NOT VERIFIED"
		}
		if r.Note == "not supported" {
			fmt.Fprintf(&b, "| %s | %s | | | | | | | %s |\n", r.Method, r.Scenario, note)
			continue
		}
		tall := "—"
		ratio := "—"
		if r.TAll > 0 {
			tall = fmt.Sprintf("%.1f s", r.TAll.Seconds())
			ratio = fmt.Sprintf("**%.2f**", r.ratio(r.TAll, tmin))
		}
		med, worst := "—", "—"
		if r.Median > 0 {
			med = fmt.Sprintf("%.2f", r.ratio(r.Median, tmin))
			worst = fmt.Sprintf("%.2f", r.ratio(r.Worst, tmin))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.2f×S | %.0f%% (%.0f%%) | %s |\n", r.Method, r.Scenario, tall, ratio, med, worst,
			float64(r.ServerSent)/float64(cfg.size), 100*r.CPUAvg, 100*r.CPUPeak, note)
	}
	fmt.Fprintf(&b, "\n![completion time against N](bench.svg)\n")
	if err := os.WriteFile(cfg.out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(cfg.svg, []byte(plot(cfg, results)), 0o644)
}

// plot draws T_all/T_min against N for the homogeneous runs, a line per
// method, as a small self-contained SVG.
func plot(cfg *config, results []result) string {
	const W, H, L, R, T, B = 640, 400, 60, 150, 30, 50
	tmin := cfg.tmin()
	series := map[string][][2]float64{}
	var order []string
	maxY, maxN := 2.0, 1
	for _, r := range results {
		if !strings.HasPrefix(r.Scenario, "homogeneous") || r.TAll == 0 {
			continue
		}
		if _, ok := series[r.Method]; !ok {
			order = append(order, r.Method)
		}
		y := r.ratio(r.TAll, tmin)
		series[r.Method] = append(series[r.Method], [2]float64{float64(r.N), y})
		maxY = max(maxY, y)
		maxN = max(maxN, r.N)
	}
	x := func(n float64) float64 { return L + n/float64(maxN)*(W-L-R) }
	y := func(v float64) float64 { return H - B - v/maxY*(H-T-B) }
	colors := []string{"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="18" font-size="14">Time until every client is imaged (T_all / T_min), R=%d Mbit/s, S=%d MiB</text>`+"\n", L, cfg.rate/1e6, cfg.size>>20)
	fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", L, H-B, W-R, H-B)
	fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", L, T, L, H-B)
	for _, n := range cfg.ns {
		fmt.Fprintf(&s, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(n)), H-B+18, n)
	}
	fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="middle">clients N</text>`+"\n", (L+W-R)/2, H-12)
	step := 1.0
	for maxY/step > 10 {
		step *= 2
	}
	for v := 0.0; v <= maxY+1e-9; v += step {
		fmt.Fprintf(&s, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#ddd"/><text x="%d" y="%.0f" text-anchor="end">%g×</text>`+"\n", L, y(v), W-R, y(v), L-6, y(v)+4, v)
	}
	for i, m := range order {
		c := colors[i%len(colors)]
		var pts []string
		for _, p := range series[m] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
			fmt.Fprintf(&s, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(p[0]), y(p[1]), c)
		}
		fmt.Fprintf(&s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
		fmt.Fprintf(&s, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", W-R+10, T+20+18*i, c, m)
	}
	s.WriteString("</svg>\n")
	return s.String()
}
