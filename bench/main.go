// Command bench is the fleet benchmark: it builds a simulated LAN of
// network namespaces (198.18.0.0/15, every link shaped to the same rate
// with tc), and images N clients with pxeswarm, HTTP unicast, udpcast
// multicast and qBittorrent (libtorrent), side by side in one run on the
// same image and links. On ext4 and NTFS images (about 15% used,
// fragmented) it runs pxeswarm's used-block torrent against Clonezilla's
// pipeline (partclone into udpcast) and the raw-image methods, against
// both floors, S/R and used/R. It also measures what mktorrent reads of a
// 256 GB partition, the peak RSS of a seeding and a fetching pxeswarm
// for a 256 GiB image, and a capture (pxeswarm capture --disk to pxeswarm
// serve, capture.go): bytes on the wire against used, time against used/R
// and against reading the used blocks. It writes docs/BENCHMARKS.md and a
// plot. Run it as root:
//
//	make bench                 # the whole matrix
//	make bench-quick           # N=4: pxeswarm against HTTP (raw) and partclone + udpcast (ext4); a capture of the ext4
//	make bench-mktorrent       # mktorrent's read cost alone
//	make bench-memory          # the memory figure alone
//	bin/bench --only capture   # the capture scenario alone, its section printed
//	bin/bench --only slowpeers # every client CPU-limited (a cgroup each), N=3 and 8, beside homogeneous runs
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/usedmap"
)

type config struct {
	bin    string // pxeswarm binary
	rate   int64  // link rate, bits/s
	size   int64  // raw image bytes
	piece  string // piece size for mktorrent
	ns     []int
	scenN  int
	slowNs []int // client counts of the slow-peers scenario
	// The fleet rows: pxeswarm alone at N=32 and more, at a link rate
	// and image size two cores can drive (issue 20).
	fleetNs   []int
	fleetRate int64   // bits/s
	fleetSize int64   // bytes
	roomsNs   []int   // client counts of the two-rooms scenario (pxeswarm), split evenly
	slowCPU   float64 // slow peers: each client's share of one core
	// slow peers: the server's link in R; above 1 the clients, not the
	// server's link, limit the transfer, as in make demo
	slowServerLink float64
	slowRate       int64         // slow peers: every link's rate, bits/s
	slowCap        time.Duration // slow peers: the least time a run may take before it is called not done
	slowStagger    time.Duration // slow peers: client k starts (k-1)× this after the first
	methods        []method
	scenarios      []string
	work           string
	out, svg       string
	quick          bool
	trace          string // directory for every process's output, timed

	// The filesystem scenarios.
	fsKinds     []string // "ext4", "ntfs"
	fsSize      int64    // partition bytes
	fsUsedPct   int      // share used, percent
	fsNs        []int    // client counts, homogeneous
	fsScenarios []string // "homogeneous", "slow"
	fsMethods   []method
	fsRawEvery  bool // raw-image methods on every filesystem, not the first only

	costSize, costFill sizeFlag // mktorrent's read cost (costFill 0: not measured)
	cost               *readCost

	// The memory figure (memory.go); memFor 0: not measured.
	memSize, memRate sizeFlag
	memFor           time.Duration
	initramfs        string // unpacked size for the agent's budget ("": left out)
	mem              *memCost
	// The capture scenario (capture.go).
	capKinds    []string // "ext4", "ntfs"; none: not run
	capSize     int64    // the golden disk's bytes
	capUsedPct  int      // share used, percent
	capSlowDisk float64  // also with the disk's reads throttled to this fraction of R (0: not)
	capRate     int64    // the capture's link rate, bits/s
	captures    []captureResult
}

// sizeFlag is a byte count in human units (256GB, 4GiB).
type sizeFlag int64

func (b *sizeFlag) String() string { return bytesize.Format(int64(*b)) }
func (b *sizeFlag) Set(s string) error {
	n, err := bytesize.Parse(s)
	*b = sizeFlag(n)
	return err
}

// tmin is the physical floor of the raw scenarios: one image over one link.
func (c *config) tmin() time.Duration { return floorOf(c.size, c.rate) }

// floorOf is the time n bytes take over a link of rate bits/s.
func floorOf(n, rate int64) time.Duration {
	return time.Duration(float64(n*8) / float64(rate) * float64(time.Second))
}

type scenario struct {
	kind string
	n    int
	fs   string // "" for the raw image, else the filesystem image's kind
}

// scenarioLabels are the report rows' names of the scenario kinds, as
// formats of the client count.
var scenarioLabels = map[string]string{
	"homogeneous": "homogeneous N=%d",
	"slow":        "one slow client (R/10), N=%d",
	"late":        "late joiners (half at 50%%), N=%d",
	"loss":        "one client with 2%% loss, N=%d",
	"killed":      "one client killed halfway, N=%d",
	"slowpeers":   "slow peers (CPU-limited), N=%d",
	"fleet":       "fleet, N=%d",
	"rooms":       "two rooms behind a router, N=%d",
}

// label names the scenario's report row (scenarioLabels; an unknown kind
// names itself), after its filesystem image's kind if it has one.
func (s scenario) label() string {
	l := s.kind
	if format, ok := scenarioLabels[s.kind]; ok {
		l = fmt.Sprintf(format, s.n)
	}
	if s.fs != "" {
		l = s.fs + ", " + l
	}
	return l
}

// capFactor bounds a run, in the run's floor (S/R, or used/R for a
// method that ships the used blocks of a filesystem image): HTTP unicast
// needs N×T_min by construction; the others should need little more than
// one, and a method not done at 4× is over three times the goal (it
// keeps the whole matrix short).
func capFactor(m method, sc scenario) float64 {
	switch {
	case m.name() == "http":
		return 1.3*float64(sc.n) + 3
	case sc.kind == "slow":
		return 3 // healthy clients should not wait for the slow one
	case sc.kind == "slowpeers":
		return 6 // every client is slow: the floor is not theirs to reach
	}
	return 4
}

type benchImage struct {
	path, name, sha1 string
	torrent          string // what pxeswarm ships: used blocks on a filesystem image
	rawTorrent       string // every byte (--raw), for the other BitTorrent clients
	pieces           string // "512 pieces of 256KiB"
	size             int64
	fs               string           // "" for the raw image, else "ext4" or "ntfs"
	used             int64            // bytes the filesystem uses (size for the raw image)
	usedExts         []usedmap.Extent // where they are ([0, size) for the raw image)
	usedSHA1         string           // of the used bytes, in order
}

// floor is the run's physical floor: the bytes method m must move over
// one link. A method that ships a filesystem's used blocks has used/R,
// any other S/R.
func (img *benchImage) floor(m method, rate int64) time.Duration {
	if img.fs != "" && m.shipsUsed() {
		return floorOf(img.used, rate)
	}
	return floorOf(img.size, rate)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-http" {
		serveHTTP(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "read-used" {
		readUsedMain(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "mktorrent-cost" {
		mktorrentCost(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "memory" {
		memory(os.Args[2:])
		return
	}
	cfg := &config{costSize: 256e9, costFill: 4 << 30, memSize: defaultMemSize, memRate: defaultMemRate}
	var ns, slowNs, fleetNs, roomsNs, methods, scenarios, fsKinds, fsNs, fsScenarios, fsMethods, capKinds, only string
	var slowRateMbit, fleetRateMbit, fleetSizeMiB, rateMbit, sizeMiB, fsSizeMiB, capSizeMiB, capRateMbit int64
	flag.StringVar(&cfg.bin, "pxeswarm", "bin/pxeswarm", "pxeswarm binary to benchmark")
	flag.Int64Var(&rateMbit, "rate", 50, "link rate R in Mbit/s, every link, both directions (50: 16 clients stay within 2 cores)")
	flag.Int64Var(&sizeMiB, "size", 128, "raw image size S in MiB (random data)")
	flag.StringVar(&cfg.piece, "piece-size", "", "piece size of the bench image (default: pxeswarm mktorrent's default for its size)")
	flag.StringVar(&ns, "n", "4,8,16", "client counts for the homogeneous scenario")
	flag.IntVar(&cfg.scenN, "scenario-n", 8, "client count for the other scenarios")
	flag.StringVar(&fleetNs, "fleet-n", "16,32,64,100", "client counts for the fleet rows: pxeswarm alone, homogeneous, at --fleet-rate and --fleet-size; N=16 is the reference the larger rows are compared with (empty: none)")
	flag.Int64Var(&fleetRateMbit, "fleet-rate", 10, "fleet rows: link rate in Mbit/s (N × R is what the machine's CPUs must move)")
	flag.Int64Var(&fleetSizeMiB, "fleet-size", 32, "fleet rows: image size in MiB")
	flag.StringVar(&roomsNs, "rooms-n", "16", "client counts for the two-rooms scenario, split evenly between the rooms: pxeswarm, two /24 rooms behind a router namespace, the image host on a third segment, every link (room uplinks too) at R (16: as many clients as the homogeneous N=16 row, which 2 cores drive at R=50 Mbit/s; empty: none)")
	flag.StringVar(&slowNs, "slowpeers-n", "3,8", "client counts for the slowpeers scenario")
	flag.Float64Var(&cfg.slowServerLink, "slowpeers-server-link", 1, "slowpeers scenario: the server's link rate in --slowpeers-rate")
	flag.Int64Var(&slowRateMbit, "slowpeers-rate", 1000, "slowpeers scenario: every link's rate in Mbit/s (1000: the clients' CPU, not the links, limit the transfer, as in make demo, whose links are not shaped; --rate's 50 makes the links the limit, and then the swarm carried the load in our runs)")
	flag.DurationVar(&cfg.slowCap, "slowpeers-cap", 3*time.Minute, "slowpeers scenario: a run may take at least this long (besides 6×T_min) before it is called not done")
	flag.DurationVar(&cfg.slowStagger, "slowpeers-stagger", 0, "slowpeers scenario: start the clients one after another, this far apart (machines that boot at different times)")
	flag.Float64Var(&cfg.slowCPU, "slowpeers-cpu", 0.05, "slowpeers scenario: each client's share of one core (a CPU cgroup per client, 100 ms period: it is stopped for the rest of each period)")
	flag.StringVar(&methods, "methods", "pxeswarm,http,udpcast,qbittorrent", "methods to run on the raw image: pxeswarm, http, udpcast, qbittorrent, transmission")
	flag.StringVar(&scenarios, "scenarios", "homogeneous,slow,late,loss,killed,slowpeers", "scenarios to run on the raw image (empty: none): homogeneous, slow, late, loss, killed, slowpeers (every client CPU-limited; at --slowpeers-n)")
	flag.StringVar(&fsKinds, "fs", "ext4,ntfs", "filesystem images to run the filesystem scenarios on: ext4, ntfs (empty: none)")
	flag.Int64Var(&fsSizeMiB, "fs-size", 512, "filesystem image (partition) size S in MiB")
	flag.IntVar(&cfg.fsUsedPct, "fs-used", 15, "share of the filesystem image its files and metadata use, in percent")
	flag.StringVar(&fsNs, "fs-n", "4,16", "client counts for the homogeneous filesystem scenario (on the raw image, HTTP runs at the smallest only, the BitTorrent clients at the largest)")
	flag.StringVar(&fsScenarios, "fs-scenarios", "homogeneous,slow", "scenarios to run on the filesystem images: homogeneous, slow, killed, loss")
	flag.StringVar(&fsMethods, "fs-methods", "pxeswarm,clonezilla,http,qbittorrent", "methods to run on the filesystem images: pxeswarm (used blocks), clonezilla (partclone + udpcast), http and qbittorrent (raw image), transmission")
	flag.BoolVar(&cfg.fsRawEvery, "fs-raw-every", false, "run the raw-image methods (http, qbittorrent) on every filesystem image, not only the first (they do not read the filesystem)")
	flag.Var(&cfg.costSize, "cost-size", "mktorrent read cost: partition size (a sparse file)")
	flag.Var(&cfg.costFill, "cost-fill", "mktorrent read cost: bytes of files in it (0: do not measure)")
	flag.Var(&cfg.memSize, "memory-size", "memory figure: image size (a sparse file)")
	flag.Var(&cfg.memRate, "memory-rate", "memory figure: the fetcher's download cap per second (it writes this much to the disk each second)")
	flag.DurationVar(&cfg.memFor, "memory-for", defaultMemFor, "memory figure: how long the fetch runs (0: do not measure)")
	flag.StringVar(&cfg.initramfs, "initramfs", "", "memory figure: the agent's initramfs (cpio, gzip or xz), for the 1 GiB terminal's budget (empty: left out)")
	flag.StringVar(&capKinds, "capture-fs", "ext4,ntfs", "golden disks for the capture scenario (pxeswarm capture --disk to pxeswarm serve over one link): ext4, ntfs (empty: none)")
	flag.Int64Var(&capSizeMiB, "capture-size", 1024, "capture scenario: the golden disk's size in MiB (a filesystem image on a loop device)")
	flag.IntVar(&cfg.capUsedPct, "capture-used", 18, "capture scenario: share of the golden disk in use, in percent")
	flag.Float64Var(&cfg.capSlowDisk, "capture-slow-disk", 0.5, "capture scenario: also capture each golden disk with its reads throttled (blkio cgroup) to this fraction of R, so the disk is the slower floor (0: not)")
	flag.Int64Var(&capRateMbit, "capture-rate", 0, "capture scenario: its link's rate in Mbit/s (0: --rate)")
	flag.StringVar(&only, "only", "", `run one part alone and print its section instead of writing the report: "capture"; "slowpeers" (pxeswarm with every client CPU-limited, at --slowpeers-n, with the homogeneous runs at --n beside it for comparison; --n "" leaves them out); "rooms" (two rooms behind a router, at --rooms-n); "fleet" (pxeswarm at --fleet-n, at --fleet-rate and --fleet-size)`)
	flag.StringVar(&cfg.out, "out", "docs/BENCHMARKS.md", "report to write")
	flag.StringVar(&cfg.svg, "svg", "docs/bench.svg", "plot to write")
	flag.StringVar(&cfg.trace, "trace", "", "write every process's output, each line with its time since the clients started, under this directory")
	flag.BoolVar(&cfg.quick, "quick", false, "N=4: a 64 MiB raw image, pxeswarm against HTTP unicast, and a 256 MiB ext4 image, pxeswarm against partclone + udpcast, and a capture of that ext4 at 25 Mbit/s; exit 1 unless pxeswarm is faster in both and the capture moved ≤ 1.05×used and took ≤ 1.3×max(used/R, read)")
	flag.Parse()
	if cfg.quick {
		ns, methods, scenarios, sizeMiB, rateMbit, cfg.costFill, cfg.memFor = "4", "pxeswarm,http", "homogeneous", 64, 100, 0, 0
		fleetNs, roomsNs = "", ""
		fsKinds, fsSizeMiB, fsNs, fsScenarios, fsMethods = "ext4", 256, "4", "homogeneous", "pxeswarm,clonezilla"
		// The capture reuses the ext4 image (38 MiB used) at a quarter
		// of R: used/R is then 13 s, so its fixed cost (starting, the
		// server's re-hash, publishing: about 0.8 s) weighs little.
		capKinds, capSizeMiB, cfg.capUsedPct, capRateMbit, cfg.capSlowDisk = "ext4", fsSizeMiB, cfg.fsUsedPct, 25, 0
	}
	if only != "" && only != "rooms" {
		roomsNs = ""
	}
	if only != "" && only != "fleet" {
		fleetNs = ""
	}
	switch only {
	case "":
	case "capture":
		scenarios, fsKinds, methods, fsMethods, cfg.costFill = "", "", "", "", 0
	case "slowpeers":
		scenarios, fsKinds, methods, capKinds, cfg.costFill, cfg.memFor = "homogeneous,slowpeers", "", "pxeswarm", "", 0, 0
	case "rooms", "fleet":
		scenarios, fsKinds, methods, capKinds, cfg.costFill, cfg.memFor = "", "", "pxeswarm", "", 0, 0
	default:
		log.Fatalf("--only %q: want capture, slowpeers, rooms or fleet", only)
	}
	cfg.rate, cfg.size, cfg.fsSize, cfg.capSize = rateMbit*1e6, sizeMiB<<20, fsSizeMiB<<20, capSizeMiB<<20
	cfg.capRate = cfg.rate
	if capRateMbit > 0 {
		cfg.capRate = capRateMbit * 1e6
	}
	var err error
	if cfg.ns, err = counts("-n", ns); err != nil {
		log.Fatal(err)
	}
	if cfg.fleetNs, err = counts("-fleet-n", fleetNs); err != nil {
		log.Fatal(err)
	}
	cfg.fleetRate, cfg.fleetSize, cfg.slowRate = fleetRateMbit*1e6, fleetSizeMiB<<20, slowRateMbit*1e6
	if cfg.roomsNs, err = counts("-rooms-n", roomsNs); err != nil {
		log.Fatal(err)
	}
	if cfg.slowNs, err = counts("-slowpeers-n", slowNs); err != nil {
		log.Fatal(err)
	}
	if cfg.fsNs, err = counts("-fs-n", fsNs); err != nil {
		log.Fatal(err)
	}
	all := map[string]method{"pxeswarm": pxeswarmMethod{}, "http": httpMethod{}, "udpcast": multicastMethod{}, "clonezilla": clonezillaMethod{},
		"transmission": transmissionMethod{btClient{"tr"}}, "qbittorrent": qbittorrentMethod{btClient{"qb"}}}
	pick := func(flagName, list string) []method {
		var ms []method
		for _, f := range fields(list) {
			m, ok := all[f]
			if !ok {
				log.Fatalf("-%s: unknown %q; want pxeswarm, http, udpcast, clonezilla, qbittorrent, transmission", flagName, f)
			}
			ms = append(ms, m)
		}
		return ms
	}
	cfg.methods, cfg.fsMethods = pick("methods", methods), pick("fs-methods", fsMethods)
	cfg.scenarios, cfg.fsKinds, cfg.fsScenarios, cfg.capKinds = fields(scenarios), fields(fsKinds), fields(fsScenarios), fields(capKinds)
	for _, k := range cfg.fsKinds {
		if k != "ext4" && k != "ntfs" {
			log.Fatalf("-fs: unknown %q; want ext4 or ntfs", k)
		}
	}
	for _, k := range cfg.capKinds {
		if k != "ext4" && k != "ntfs" {
			log.Fatalf("-capture-fs: unknown %q; want ext4 or ntfs", k)
		}
	}
	for _, s := range cfg.fsScenarios {
		if s == "late" {
			log.Fatalf("-fs-scenarios: late joiners are not run on the filesystem images (udpcast cannot join a session under way); want homogeneous, slow, loss or killed")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	results, imgs, err := benchmark(ctx, cfg, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	if cfg.quick {
		if err := checkQuick(cfg, results); err != nil {
			log.Fatal(err)
		}
		if err := checkCapture(cfg.captures); err != nil {
			log.Fatal(err)
		}
		return
	}
	if only == "slowpeers" || only == "rooms" || only == "fleet" {
		switch only {
		case "slowpeers":
			fmt.Print(slowPeersMarkdown(cfg, results))
		case "rooms":
			fmt.Print(roomsMarkdown(results))
		}
		fmt.Printf("bench: --only %s took %s; the report (%s) is written by a whole run only\n", only, time.Since(t0).Round(time.Second), cfg.out)
		return
	}
	if only != "" {
		fmt.Print(captureMarkdown(cfg, cfg.captures))
		fmt.Printf("bench: --only %s took %s; the report (%s) is written by a whole run only\n", only, time.Since(t0).Round(time.Second), cfg.out)
		return
	}
	if err := writeReport(cfg, imgs, results, time.Since(t0)); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bench: the whole matrix took %s; wrote %s and %s\n", time.Since(t0).Round(time.Second), cfg.out, cfg.svg)
}

// fields splits a comma-separated flag value; empty is none.
func fields(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// counts parses a comma-separated list of client counts.
func counts(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range fields(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 200 {
			return nil, fmt.Errorf("%s %q: want client counts from 1 to 200", flagName, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func checkTools(cfg *config) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the benchmark builds network namespaces: run it as root")
	}
	need := map[string]string{"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}
	ms := cfg.methods
	if len(cfg.fsKinds) > 0 {
		ms = append(slices.Clone(ms), cfg.fsMethods...)
		maps.Copy(need, fsTools)
	}
	if len(cfg.capKinds) > 0 {
		maps.Copy(need, fsTools)
		need["losetup"], need["curl"], need["dumpe2fs"], need["ntfsinfo"] = "util-linux", "curl", "e2fsprogs", "ntfs-3g"
	}
	for _, m := range ms {
		switch m.name() {
		case "http":
			need["curl"] = "curl"
		case "udpcast":
			need["udp-sender"] = "udpcast"
		case "clonezilla":
			need["udp-sender"] = "udpcast"
			need["partclone.extfs"] = "partclone"
			need["partclone.ntfs"] = "partclone"
			need["bash"] = "bash"
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
// It returns the results and the images, by filesystem kind ("" is the
// raw image).
func benchmark(ctx context.Context, cfg *config, out *os.File) ([]result, map[string]*benchImage, error) {
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
	imgs := map[string]*benchImage{}
	type job struct {
		sc  scenario
		ms  []method
		cfg *config     // nil: cfg
		img *benchImage // nil: imgs[sc.fs]
	}
	var jobs []job
	if len(cfg.scenarios) > 0 && len(cfg.methods) > 0 || len(cfg.roomsNs) > 0 {
		img, err := makeImage(cfg)
		if err != nil {
			return nil, nil, err
		}
		imgs[""] = img
		fmt.Fprintf(out, "bench: R=%d Mbit/s, S=%d MiB (%s), T_min=%.1fs, %d cores\n", cfg.rate/1e6, cfg.size>>20, img.pieces, cfg.tmin().Seconds(), runtime.NumCPU())
		for _, s := range cfg.scenarios {
			switch s {
			case "homogeneous":
				for _, n := range cfg.ns {
					jobs = append(jobs, job{sc: scenario{"homogeneous", n, ""}, ms: cfg.methods})
				}
			case "slowpeers":
				sc := *cfg
				sc.rate = cfg.slowRate
				for _, n := range cfg.slowNs {
					jobs = append(jobs, job{sc: scenario{"slowpeers", n, ""}, ms: cfg.methods, cfg: &sc, img: img})
				}
			default:
				jobs = append(jobs, job{sc: scenario{s, cfg.scenN, ""}, ms: cfg.methods})
			}
		}
	}
	if len(cfg.roomsNs) > 0 && imgs[""] != nil {
		for _, n := range cfg.roomsNs {
			jobs = append(jobs, job{sc: scenario{"rooms", n, ""}, ms: []method{pxeswarmMethod{}}})
		}
	}
	if len(cfg.fleetNs) > 0 {
		fc := *cfg
		fc.rate, fc.size, fc.work = cfg.fleetRate, cfg.fleetSize, filepath.Join(cfg.work, "fleet")
		if err := os.MkdirAll(fc.work, 0o755); err != nil {
			return nil, nil, err
		}
		img, err := makeImage(&fc)
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(out, "bench: fleet rows: R=%d Mbit/s, S=%d MiB (%s), T_min=%.1fs\n", fc.rate/1e6, fc.size>>20, img.pieces, fc.tmin().Seconds())
		for _, n := range cfg.fleetNs {
			jobs = append(jobs, job{sc: scenario{"fleet", n, ""}, ms: []method{pxeswarmMethod{}}, cfg: &fc, img: img})
		}
	}
	for _, kind := range cfg.fsKinds {
		if len(cfg.fsMethods) == 0 {
			break
		}
		img, err := makeFSBenchImage(cfg, kind)
		if err != nil {
			return nil, nil, err
		}
		imgs[kind] = img
		fmt.Fprintf(out, "bench: %s image: S=%d MiB, %.1f%% used (%d MiB in %d extents; %s), S/R=%.1fs, used/R=%.1fs\n", kind, img.size>>20,
			100*float64(img.used)/float64(img.size), img.used>>20, len(img.usedExts), img.pieces,
			floorOf(img.size, cfg.rate).Seconds(), floorOf(img.used, cfg.rate).Seconds())
		for _, s := range cfg.fsScenarios {
			if s == "homogeneous" {
				for _, n := range cfg.fsNs {
					jobs = append(jobs, job{sc: scenario{"homogeneous", n, kind}, ms: cfg.fsMethods})
				}
			} else {
				jobs = append(jobs, job{sc: scenario{s, cfg.scenN, kind}, ms: cfg.fsMethods})
			}
		}
	}
	if cfg.costFill > 0 {
		fmt.Fprintf(out, "bench: mktorrent's read cost on a %s ext4 with %s of files\n", bytesize.Format(int64(cfg.costSize)), bytesize.Format(int64(cfg.costFill)))
		if cfg.cost, err = measureReadCost(cfg.bin, cfg.work, int64(cfg.costSize), int64(cfg.costFill)); err != nil {
			return nil, nil, err
		}
		fmt.Fprint(out, cfg.cost.markdown())
	}
	if cfg.memFor > 0 {
		fmt.Fprintf(out, "bench: peak RSS of seed and fetch on a %s image, fetching for %s\n", bytesize.Format(int64(cfg.memSize)), cfg.memFor)
		if cfg.mem, err = measureMemory(cfg.bin, cfg.work, int64(cfg.memSize), cfg.memFor, int64(cfg.memRate), cfg.initramfs); err != nil {
			return nil, nil, err
		}
		fmt.Fprint(out, cfg.mem.markdown())
	}
	var results []result
	for _, j := range jobs {
		img, cfg := imgs[j.sc.fs], cfg
		if j.img != nil {
			img, cfg = j.img, j.cfg
		}
		for _, m := range j.ms {
			base := result{Method: m.name(), Scenario: j.sc.label(), N: j.sc.n, FS: j.sc.fs, Size: img.size, Used: img.used,
				Floor: floorOf(img.size, cfg.rate), RunFloor: img.floor(m, cfg.rate)}
			if why := skip(cfg, m, j.sc); why != "" {
				base.Note = why
				results = append(results, base)
				continue
			}
			if ctx.Err() != nil {
				return results, imgs, ctx.Err()
			}
			res, err := runOne(ctx, cfg, img, m, j.sc)
			if err != nil {
				res.Note = "failed: " + err.Error()
			}
			res.FS, res.Size, res.Used, res.Floor, res.RunFloor = base.FS, base.Size, base.Used, base.Floor, base.RunFloor
			if j.sc.kind == "fleet" {
				res.Note = strings.TrimPrefix(fmt.Sprintf("%s; R=%d Mbit/s, S=%d MiB", res.Note, cfg.rate/1e6, img.size>>20), "; ")
			}
			results = append(results, res)
			fmt.Fprintln(out, res.line())
		}
	}
	if len(cfg.capKinds) > 0 {
		fmt.Fprintf(out, "bench: capture: golden disks of %d MiB, %d%% used, over one link of %d Mbit/s\n", cfg.capSize>>20, cfg.capUsedPct, cfg.capRate/1e6)
		if cfg.captures, err = captureBench(ctx, cfg, imgs, out); err != nil {
			return results, imgs, err
		}
	}
	return results, imgs, nil
}

// skip says why method m does not run scenario sc, or "" when it does.
func skip(cfg *config, m method, sc scenario) string {
	if !m.supports(sc) {
		return "not supported"
	}
	if sc.fs == "" || m.shipsUsed() {
		return ""
	}
	// The raw-image methods do not read the filesystem: their time
	// depends on S only, so the filesystem scenarios run them sparingly.
	switch {
	case !cfg.fsRawEvery && sc.fs != cfg.fsKinds[0]:
		return fmt.Sprintf("not run: the raw image is the same size as the %s one; see its rows (--fs-raw-every runs it)", cfg.fsKinds[0])
	case sc.kind != "homogeneous":
		return "not run: homogeneous only on a filesystem image"
	case m.name() == "http" && sc.n != slices.Min(cfg.fsNs):
		return "not run: N×S/R by construction; run at the smallest N only"
	case m.name() != "http" && sc.n != slices.Max(cfg.fsNs):
		return "not run: at the largest N only on a filesystem image"
	}
	return ""
}

func (r result) line() string {
	s := fmt.Sprintf("%-13s %-46s", r.Method, r.Scenario)
	if r.TAll > 0 {
		s += fmt.Sprintf(" T_all %6.1fs = %5.2f×S/R", r.TAll.Seconds(), r.ratio(r.TAll, r.Floor))
		if r.FS != "" {
			s += fmt.Sprintf(" = %5.2f×used/R", r.TAll.Seconds()/floorOf(r.Used, r.rate()).Seconds())
		}
		s += fmt.Sprintf("  median %5.2f× worst %5.2f× (of its floor)", r.ratio(r.Median, r.RunFloor), r.ratio(r.Worst, r.RunFloor))
	}
	s += fmt.Sprintf("  server sent %.2f×S", float64(r.ServerSent)/float64(r.Size))
	if r.FS != "" {
		s += fmt.Sprintf(" = %.2f×used", float64(r.ServerSent)/float64(r.Used))
	}
	if r.ClientGot > 0 {
		s += fmt.Sprintf("  client link %.2f×S", r.ClientGot/float64(r.Size))
		if r.FS != "" {
			s += fmt.Sprintf(" = %.2f×used", r.ClientGot/float64(r.Used))
		}
	}
	s += fmt.Sprintf("  cpu %.0f%% (peak %.0f%%)", 100*r.CPUAvg, 100*r.CPUPeak)
	if r.Received > 0 {
		s += fmt.Sprintf("  client got %.2f×S (wasted %.2f×S, %.0f%% from peers)", r.Received, r.Wasted, 100*r.FromPeers)
	}
	if r.ServedPlainly > 0 {
		s += fmt.Sprintf("  seeder served %d peers plainly", r.ServedPlainly)
	}
	if r.Throttled > 0 {
		s += fmt.Sprintf("  clients stopped by their CPU limit %.0f%% of the run", 100*r.Throttled)
	}
	for room, in := range r.RoomIn {
		if in > 0 {
			s += fmt.Sprintf("  room %c: %.2f×S across the router, T_all %.2f×", 'A'+room, float64(in)/float64(r.Size), r.ratio(r.RoomTAll[room], r.Floor))
		}
	}
	if r.PeakRSS > 0 {
		s += fmt.Sprintf("  client peak RSS %s", bytesize.Format(r.PeakRSS))
	}
	s += fmt.Sprintf("  load %.1f", r.Load)
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
	img := &benchImage{path: filepath.Join(dir, "image.img"), name: "bench", size: cfg.size}
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
	if err := mktorrent(cfg, img, dir); err != nil {
		return nil, err
	}
	img.used, img.usedExts = img.size, []usedmap.Extent{{Off: 0, Len: img.size}}
	img.sha1, err = fileSHA1(img.path)
	img.usedSHA1 = img.sha1
	return img, err
}

// makeFSBenchImage writes the filesystem image of kind and its two
// torrents: the default (used blocks) for pxeswarm, --raw for the others.
func makeFSBenchImage(cfg *config, kind string) (*benchImage, error) {
	dir := filepath.Join(cfg.work, "image-"+kind)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	img := &benchImage{path: filepath.Join(dir, kind+".img"), name: "bench-" + kind, size: cfg.fsSize, fs: kind}
	m, err := makeFSImage(dir, img.path, kind, cfg.fsSize, cfg.fsUsedPct)
	if err != nil {
		return nil, fmt.Errorf("make the %s image: %w", kind, err)
	}
	img.used, img.usedExts = m.Used(), m.Extents
	if err := mktorrent(cfg, img, dir); err != nil {
		return nil, err
	}
	if img.sha1, err = fileSHA1(img.path); err != nil {
		return nil, err
	}
	img.usedSHA1, err = usedSHA1(img.path, img.usedExts)
	return img, err
}

// mktorrent makes img's torrent (pxeswarm's default: used blocks where it
// reads the filesystem) and, for a filesystem image, its --raw torrent.
func mktorrent(cfg *config, img *benchImage, dir string) error {
	mk := func(out string, raw bool) (string, error) {
		args := []string{"mktorrent", "--name", img.name, "--tracker", "http://" + serverIP() + ":8080/announce", "-o", out}
		if cfg.piece != "" {
			args = append(args, "--piece-size", cfg.piece)
		}
		if raw {
			args = append(args, "--raw")
		}
		b, err := exec.Command(cfg.bin, append(args, img.path)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("mktorrent: %v: %s", err, b)
		}
		// "wrote X: 128MiB, infohash …, 512 pieces of 256KiB, parts …"
		m := regexp.MustCompile(`(\d+) pieces of (\S+),`).FindSubmatch(b)
		if m == nil {
			return "", fmt.Errorf("mktorrent printed no piece count: %s", b)
		}
		return fmt.Sprintf("%s pieces of %s", m[1], m[2]), nil
	}
	img.torrent = filepath.Join(dir, img.name+".torrent")
	var err error
	if img.pieces, err = mk(img.torrent, false); err != nil {
		return err
	}
	img.rawTorrent = img.torrent
	if img.fs != "" {
		img.rawTorrent = filepath.Join(dir, img.name+"-raw.torrent")
		raw, err := mk(img.rawTorrent, true)
		if err != nil {
			return err
		}
		img.pieces += "; raw: " + raw
	}
	return nil
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

// mktorrentCost is the read-cost measurement alone: it prints its
// Markdown section (make bench-mktorrent).
func mktorrentCost(args []string) {
	fs := flag.NewFlagSet("mktorrent-cost", flag.ExitOnError)
	bin := fs.String("pxeswarm", "bin/pxeswarm", "pxeswarm binary")
	size, fill := sizeFlag(256e9), sizeFlag(4<<30)
	fs.Var(&size, "size", "partition size (a sparse file)")
	fs.Var(&fill, "fill", "bytes of files in it")
	work := fs.String("work", os.TempDir(), "folder for the files and the image (needs twice --fill free)")
	fs.Parse(args)
	abs, err := filepath.Abs(*bin)
	if err != nil {
		log.Fatal(err)
	}
	rc, err := measureReadCost(abs, *work, int64(size), int64(fill))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(rc.markdown())
}

// The memory figure's defaults: issue 20's 256 GiB image, fetched for a
// minute at about the payload rate of a 1 Gbit/s link (the terminals'
// link), which writes about 7 GiB to the disk.
const (
	defaultMemSize = 256 << 30
	defaultMemRate = 112 << 20
	defaultMemFor  = time.Minute
)

// memory is the memory figure alone: it prints its Markdown section (make
// bench-memory).
func memory(args []string) {
	fs := flag.NewFlagSet("memory", flag.ExitOnError)
	bin := fs.String("pxeswarm", "bin/pxeswarm", "pxeswarm binary")
	size, rate := sizeFlag(defaultMemSize), sizeFlag(defaultMemRate)
	fs.Var(&size, "size", "image size (a sparse file)")
	fs.Var(&rate, "rate", "the fetcher's download cap per second (it writes this much to the disk each second)")
	dur := fs.Duration("for", defaultMemFor, "how long the fetch runs")
	initramfs := fs.String("initramfs", "", "the agent's initramfs (cpio, gzip or xz), for the 1 GiB terminal's budget")
	work := fs.String("work", os.TempDir(), "folder for the sparse files (needs rate × time free)")
	fs.Parse(args)
	abs, err := filepath.Abs(*bin)
	if err != nil {
		log.Fatal(err)
	}
	mc, err := measureMemory(abs, *work, int64(size), *dur, int64(rate), *initramfs)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(mc.markdown())
}

func checkQuick(cfg *config, results []result) error {
	find := func(method, fs string) *result {
		for i := range results {
			if results[i].Method == method && results[i].FS == fs {
				return &results[i]
			}
		}
		return nil
	}
	pairs := []struct{ fs, other, otherName string }{{"", "http", "HTTP unicast"}}
	if len(cfg.fsKinds) > 0 {
		pairs = append(pairs, struct{ fs, other, otherName string }{cfg.fsKinds[0], "clonezilla", "partclone + udpcast"})
	}
	for _, p := range pairs {
		px, ot := find("pxeswarm", p.fs), find(p.other, p.fs)
		if px == nil || ot == nil || px.TAll == 0 || ot.TAll == 0 || !px.Verified || !ot.Verified {
			return fmt.Errorf("quick bench: a method did not finish with verified copies: %+v %+v", px, ot)
		}
		// Both against S/R: the same denominator, so the ratio of ratios
		// is the ratio of times.
		pr, or := px.ratio(px.TAll, px.Floor), ot.ratio(ot.TAll, ot.Floor)
		what := "raw image, T_all/T_min"
		if p.fs != "" {
			what = p.fs + " image, T_all/(used/R)"
			pr, or = px.usedRatio(px.TAll), ot.usedRatio(ot.TAll)
		}
		fmt.Printf("quick bench: N=4 %s: pxeswarm %.2f, %s %.2f (pxeswarm %.1f× faster)\n", what, pr, p.otherName, or, or/pr)
		if pr >= or {
			return fmt.Errorf("quick bench: pxeswarm's T_all ratio %.2f is not below %s's %.2f (%s)", pr, p.otherName, or, what)
		}
	}
	return nil
}
