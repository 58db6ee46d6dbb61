// Command bench is the fleet benchmark: it builds a simulated LAN of
// network namespaces (198.18.0.0/15, every link shaped to the same rate
// with tc), and images N clients with pxeswarm, HTTP unicast, udpcast
// multicast and qBittorrent (libtorrent), side by side in one run on the
// same image and links. It writes docs/BENCHMARKS.md and a plot. Run it as
// root:
//
//	make bench          # the whole matrix, under 30 minutes
//	make bench-quick    # N=4, pxeswarm against HTTP unicast
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	bin       string // pxeswarm binary
	rate      int64  // link rate, bits/s
	size      int64  // image bytes
	piece     string // piece size for mktorrent
	ns        []int
	scenN     int
	methods   []method
	scenarios []string
	work      string
	out, svg  string
	quick     bool
	trace     string // directory for every process's output, timed
}

// tmin is the physical floor: one image over one link.
func (c *config) tmin() time.Duration {
	return time.Duration(float64(c.size*8) / float64(c.rate) * float64(time.Second))
}

type scenario struct {
	kind string
	n    int
}

func (s scenario) label() string {
	switch s.kind {
	case "homogeneous":
		return fmt.Sprintf("homogeneous N=%d", s.n)
	case "slow":
		return fmt.Sprintf("one slow client (R/10), N=%d", s.n)
	case "late":
		return fmt.Sprintf("late joiners (half at 50%%), N=%d", s.n)
	case "loss":
		return fmt.Sprintf("one client with 2%% loss, N=%d", s.n)
	case "killed":
		return fmt.Sprintf("one client killed halfway, N=%d", s.n)
	}
	return s.kind
}

// capFactor bounds a run, in T_min: HTTP unicast needs N×T_min by
// construction; the others should need little more than one, and a
// method not done at 4× is over three times the goal (it keeps the whole
// matrix under 30 minutes).
func capFactor(m method, sc scenario) float64 {
	switch {
	case m.name() == "http":
		return 1.3*float64(sc.n) + 3
	case sc.kind == "slow":
		return 3 // healthy clients should not wait for the slow one
	}
	return 4
}

type benchImage struct {
	path, torrent, name, sha1 string
	pieces                    string // "512 pieces of 256KiB"
	size                      int64
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-http" {
		serveHTTP(os.Args[2:])
		return
	}
	cfg := &config{}
	var ns, methods, scenarios string
	var rateMbit, sizeMiB int64
	flag.StringVar(&cfg.bin, "pxeswarm", "bin/pxeswarm", "pxeswarm binary to benchmark")
	flag.Int64Var(&rateMbit, "rate", 50, "link rate R in Mbit/s, every link, both directions (50: 16 clients stay within 2 cores)")
	flag.Int64Var(&sizeMiB, "size", 128, "image size S in MiB")
	flag.StringVar(&cfg.piece, "piece-size", "", "piece size of the bench image (default: pxeswarm mktorrent's default for its size)")
	flag.StringVar(&ns, "n", "4,8,16", "client counts for the homogeneous scenario")
	flag.IntVar(&cfg.scenN, "scenario-n", 8, "client count for the other scenarios")
	flag.StringVar(&methods, "methods", "pxeswarm,http,udpcast,qbittorrent", "methods to run: pxeswarm, http, udpcast, qbittorrent, transmission")
	flag.StringVar(&scenarios, "scenarios", "homogeneous,slow,late,loss,killed", "scenarios to run")
	flag.StringVar(&cfg.out, "out", "docs/BENCHMARKS.md", "report to write")
	flag.StringVar(&cfg.svg, "svg", "docs/bench.svg", "plot to write")
	flag.StringVar(&cfg.trace, "trace", "", "write every process's output, each line with its time since the clients started, under this directory")
	flag.BoolVar(&cfg.quick, "quick", false, "N=4, 64 MiB, pxeswarm against HTTP unicast; exit 1 unless pxeswarm's T_all ratio is below HTTP's")
	flag.Parse()
	if cfg.quick {
		ns, methods, scenarios, sizeMiB, rateMbit = "4", "pxeswarm,http", "homogeneous", 64, 100
	}
	cfg.rate, cfg.size = rateMbit*1e6, sizeMiB<<20
	for _, f := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 200 {
			log.Fatalf("-n %q: want client counts from 1 to 200", ns)
		}
		cfg.ns = append(cfg.ns, n)
	}
	all := map[string]method{"pxeswarm": pxeswarmMethod{}, "http": httpMethod{}, "udpcast": multicastMethod{}, "transmission": transmissionMethod{btClient{"tr"}}, "qbittorrent": qbittorrentMethod{btClient{"qb"}}}
	for _, f := range strings.Split(methods, ",") {
		m, ok := all[f]
		if !ok {
			log.Fatalf("-methods: unknown %q; want pxeswarm, http, udpcast, qbittorrent, transmission", f)
		}
		cfg.methods = append(cfg.methods, m)
	}
	cfg.scenarios = strings.Split(scenarios, ",")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	results, img, err := benchmark(ctx, cfg, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	if cfg.quick {
		if err := checkQuick(cfg, results); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := writeReport(cfg, img, results, time.Since(t0)); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bench: the whole matrix took %s; wrote %s and %s\n", time.Since(t0).Round(time.Second), cfg.out, cfg.svg)
}

func checkTools(cfg *config) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the benchmark builds network namespaces: run it as root")
	}
	need := map[string]string{"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}
	for _, m := range cfg.methods {
		switch m.name() {
		case "http":
			need["curl"] = "curl"
		case "udpcast":
			need["udp-sender"] = "udpcast"
		case "transmission":
			need["transmission-cli"] = "transmission-cli"
		case "qbittorrent":
			need["qbittorrent-nox"] = "qbittorrent-nox"
		}
	}
	for tool, pkg := range need {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s missing: apt-get install %s (make bench installs it)", tool, pkg)
		}
	}
	if _, err := os.Stat(cfg.bin); err != nil {
		return fmt.Errorf("pxeswarm binary %s: %w (make bench builds it)", cfg.bin, err)
	}
	return nil
}

// benchmark runs every method in every scenario and prints a line each.
func benchmark(ctx context.Context, cfg *config, out *os.File) ([]result, *benchImage, error) {
	if err := checkTools(cfg); err != nil {
		return nil, nil, err
	}
	var err error
	if cfg.bin, err = filepath.Abs(cfg.bin); err != nil {
		return nil, nil, err
	}
	if cfg.work, err = os.MkdirTemp("", "pxeswarm-bench"); err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(cfg.work)
	img, err := makeImage(cfg)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(out, "bench: R=%d Mbit/s, S=%d MiB (%s), T_min=%.1fs, %d cores\n", cfg.rate/1e6, cfg.size>>20, img.pieces, cfg.tmin().Seconds(), runtime.NumCPU())
	var scs []scenario
	for _, s := range cfg.scenarios {
		if s == "homogeneous" {
			for _, n := range cfg.ns {
				scs = append(scs, scenario{"homogeneous", n})
			}
		} else {
			scs = append(scs, scenario{s, cfg.scenN})
		}
	}
	var results []result
	for _, sc := range scs {
		for _, m := range cfg.methods {
			if !m.supports(sc) {
				results = append(results, result{Method: m.name(), Scenario: sc.label(), N: sc.n, Note: "not supported"})
				continue
			}
			if ctx.Err() != nil {
				return results, img, ctx.Err()
			}
			res, err := runOne(ctx, cfg, img, m, sc)
			if err != nil {
				res.Note = "failed: " + err.Error()
			}
			results = append(results, res)
			fmt.Fprintln(out, res.line(cfg))
		}
	}
	return results, img, nil
}

func (r result) line(cfg *config) string {
	tmin := cfg.tmin()
	s := fmt.Sprintf("%-13s %-40s", r.Method, r.Scenario)
	if r.TAll > 0 {
		s += fmt.Sprintf(" T_all %6.1fs = %5.2f×T_min  median %5.2f× worst %5.2f×", r.TAll.Seconds(), r.ratio(r.TAll, tmin), r.ratio(r.Median, tmin), r.ratio(r.Worst, tmin))
	}
	s += fmt.Sprintf("  server sent %.2f×S  cpu %.0f%% (peak %.0f%%)", float64(r.ServerSent)/float64(cfg.size), 100*r.CPUAvg, 100*r.CPUPeak)
	if r.Received > 0 {
		s += fmt.Sprintf("  client got %.2f×S (wasted %.2f×S)", r.Received, r.Wasted)
	}
	if !r.Verified && r.Done > 0 {
		s += "  NOT VERIFIED"
	}
	if r.Note != "" {
		s += "  (" + r.Note + ")"
	}
	return s
}

func makeImage(cfg *config) (*benchImage, error) {
	dir := filepath.Join(cfg.work, "image")
	os.MkdirAll(dir, 0o755)
	img := &benchImage{path: filepath.Join(dir, "image.img"), torrent: filepath.Join(dir, "bench.torrent"), name: "bench", size: cfg.size}
	f, err := os.Create(img.path)
	if err != nil {
		return nil, err
	}
	rnd, err := os.Open("/dev/urandom")
	if err != nil {
		return nil, err
	}
	defer rnd.Close()
	if _, err := io.CopyN(f, rnd, cfg.size); err != nil {
		return nil, err
	}
	f.Close()
	args := []string{"mktorrent", "--name", img.name, "--tracker", "http://" + serverIP() + ":8080/announce", "-o", img.torrent}
	if cfg.piece != "" {
		args = append(args, "--piece-size", cfg.piece)
	}
	out, err := exec.Command(cfg.bin, append(args, img.path)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mktorrent: %v: %s", err, out)
	}
	// "wrote X: 128MiB, infohash …, 512 pieces of 256KiB, parts …"
	m := regexp.MustCompile(`(\d+) pieces of (\S+),`).FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("mktorrent printed no piece count: %s", out)
	}
	img.pieces = fmt.Sprintf("%s pieces of %s", m[1], m[2])
	img.sha1, err = fileSHA1(img.path)
	return img, err
}

// serveHTTP is the HTTP unicast server: Go's file server, one file per
// request, as any web server would.
func serveHTTP(args []string) {
	fs := flag.NewFlagSet("serve-http", flag.ExitOnError)
	dir := fs.String("dir", ".", "directory to serve")
	listen := fs.String("listen", ":8000", "address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("serving", *dir, "on", ln.Addr())
	log.Fatal(http.Serve(ln, http.FileServer(http.Dir(*dir))))
}

func checkQuick(cfg *config, results []result) error {
	var px, ht *result
	for i := range results {
		switch results[i].Method {
		case "pxeswarm":
			px = &results[i]
		case "http":
			ht = &results[i]
		}
	}
	if px == nil || ht == nil || px.TAll == 0 || ht.TAll == 0 || !px.Verified || !ht.Verified {
		return fmt.Errorf("quick bench: a method did not finish with verified copies: %+v %+v", px, ht)
	}
	tmin := cfg.tmin()
	pr, hr := px.ratio(px.TAll, tmin), ht.ratio(ht.TAll, tmin)
	fmt.Printf("quick bench: N=4 T_all/T_min: pxeswarm %.2f, HTTP unicast %.2f (pxeswarm %.1f× faster)\n", pr, hr, hr/pr)
	if pr >= hr {
		return fmt.Errorf("quick bench: pxeswarm's T_all ratio %.2f is not below HTTP unicast's %.2f", pr, hr)
	}
	return nil
}
