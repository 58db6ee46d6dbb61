package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process in a namespace, with its output watched.
type proc struct {
	cmd        *exec.Cmd
	mu         sync.Mutex
	lines      []string
	exited     chan struct{}
	err        error
	doneRe     *regexp.Regexp // a line that means "image complete"
	pctRe      *regexp.Regexp // lines that carry a percentage
	doneOnExit bool           // exit 0 means complete
	sizeOf     string         // progress is this file's size / S
	allocOf    string         // progress is this file's allocated blocks / S
	doneFile   string         // complete once this file exists (its mtime)
	doneAt     time.Duration
	t0         time.Time // the run's start, for doneFile
	pct        float64
}

func (r *run) start(ctx context.Context, host, name string, args ...string) (*proc, error) {
	cmd := r.lab.command(ctx, host, name, args...)
	if pre, ok := r.wrap[host]; ok {
		// Outside ip netns exec: it mounts the namespace's own /sys,
		// where the cgroup hierarchy is not.
		cmd = exec.CommandContext(ctx, pre[0], append(slices.Clone(pre[1:]), cmd.Args...)...)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{}), t0: r.t0}
	// Its own process group, so a kill reaches a pipeline's every
	// process (the Clonezilla method runs shell pipelines).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, host, err)
	}
	r.procs = append(r.procs, p)
	trace := r.traceFile(host, name)
	go func() {
		if trace != nil {
			defer trace.Close()
		}
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sc.Split(scanCRLF)
		for sc.Scan() {
			line := sc.Text()
			now := time.Since(r.t0)
			if trace != nil {
				fmt.Fprintf(trace, "%8.3f %s\n", now.Seconds(), line)
			}
			p.mu.Lock()
			if len(p.lines) < 5000 {
				p.lines = append(p.lines, line)
			} else {
				p.lines[len(p.lines)-1] = line
			}
			if p.doneRe != nil && p.doneAt == 0 && p.doneRe.MatchString(line) {
				p.doneAt = now
				p.pct = 1
			}
			if p.pctRe != nil && p.pctRe.MatchString(line) {
				if v, ok := lastPct(line); ok && p.doneAt == 0 {
					p.pct = v
				}
			}
			p.mu.Unlock()
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		p.mu.Lock()
		if p.doneOnExit && p.err == nil && p.doneAt == 0 {
			p.doneAt = time.Since(r.t0)
			p.pct = 1
		}
		p.mu.Unlock()
		close(p.exited)
	}()
	return p, nil
}

// traceFile is where a process's output goes, each line with its time
// since the clients started, when --trace is set.
func (r *run) traceFile(host, name string) *os.File {
	if r.cfg.trace == "" {
		return nil
	}
	dir := filepath.Join(r.cfg.trace, strings.NewReplacer(" ", "", "/", "", "(", "", ")", "", ",", "-", "%", "").Replace(r.m.name()+"-"+r.sc.label()))
	os.MkdirAll(dir, 0o755)
	f, err := os.Create(filepath.Join(dir, host+"-"+filepath.Base(name)+".log"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: --trace: %v; this process's output is not traced\n", err)
		return nil
	}
	return f
}

func scanCRLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func (p *proc) waitLine(re *regexp.Regexp, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, l := range p.lines {
			if re.MatchString(l) {
				p.mu.Unlock()
				return nil
			}
		}
		p.mu.Unlock()
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited (%v) before %q: %s", p.cmd.Args[3], p.err, re, p.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s printed no %q within %s: %s", p.cmd.Args[3], re, d, p.tail())
}

func (p *proc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprint(p.lines[max(0, len(p.lines)-5):])
}

// servedPlainly is the pxeswarm seeder's log line for a peer its schedule
// gave up on (no Have or Request for its stall time): it then reveals that
// peer every piece, and the image host may send many more copies.
var servedPlainly = regexp.MustCompile(`made no progress under the seeder's schedule`)

// count returns how many of p's output lines match re.
func (p *proc) count(re *regexp.Regexp) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

func (p *proc) progress(size int64) (float64, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sizeOf != "" && p.doneAt == 0 {
		if st, err := os.Stat(p.sizeOf); err == nil {
			p.pct = float64(st.Size()) / float64(size)
		}
	}
	if p.allocOf != "" && p.doneAt == 0 {
		var st syscall.Stat_t
		if syscall.Stat(p.allocOf, &st) == nil {
			p.pct = min(1, float64(st.Blocks*512)/float64(size))
		}
	}
	if p.doneFile != "" && p.doneAt == 0 {
		if st, err := os.Stat(p.doneFile); err == nil {
			p.doneAt = max(st.ModTime().Sub(p.t0), time.Millisecond)
			p.pct = 1
		}
	}
	return p.pct, p.doneAt
}

// kill kills the process and its process group.
func (p *proc) kill() {
	if p.cmd.Process != nil {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.cmd.Process.Kill()
	}
	<-p.exited
}

// stop asks the process to finish (SIGINT), so it prints its summary,
// and kills it after 5 s.
func (p *proc) stop() {
	if p.cmd.Process != nil {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.kill()
	}
}

var (
	recvRe    = regexp.MustCompile(`received_bytes=(\d+) sent_bytes=(\d+) wasted_bytes=(\d+)`)
	seedersRe = regexp.MustCompile(`from_seeders_bytes=(\d+)`)
)

// summary returns what a pxeswarm fetch reported receiving, wasting and
// getting from image hosts.
func (p *proc) summary() (recv, wasted, fromSeeders int64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if m := recvRe.FindStringSubmatch(l); m != nil {
			fmt.Sscan(m[1], &recv)
			fmt.Sscan(m[3], &wasted)
			ok = true
			if m := seedersRe.FindStringSubmatch(l); m != nil {
				fmt.Sscan(m[1], &fromSeeders)
			}
		}
	}
	return
}

// run is one method in one scenario.
type run struct {
	cfg   *config
	img   *benchImage
	m     method
	sc    scenario
	lab   *lab
	dir   string
	t0    time.Time
	procs []*proc
	wrap  map[string][]string // host → command prefix (a CPU cgroup)
}

// result of one run.
type result struct {
	Method, Scenario string
	N                int
	FS               string        // "" on the raw image
	Size, Used       int64         // the image's S and the bytes its filesystem uses (S for raw)
	Floor            time.Duration // S/R
	RunFloor         time.Duration // the method's floor: used/R if it ships used blocks, else S/R
	TAll             time.Duration // all healthy clients done (0: not all)
	Median, Worst    time.Duration
	Healthy, Done    int
	ServerSent       int64
	ClientGot        float64 // bytes into a healthy client's link, on average
	CPUAvg, CPUPeak  float64
	Verified         bool
	Received, Wasted float64          // per healthy client, as a multiple of S (pxeswarm only)
	FromPeers        float64          // share of the clients' useful bytes that came from other clients (pxeswarm only)
	RoomIn           [2]int64         // two rooms: bytes the router sent into each room
	RoomTAll         [2]time.Duration // two rooms: each room's T_all (its last client's time; 0 with no client done)
	PeakRSS          int64            // the largest client's peak resident set (VmHWM), bytes (0: not read)
	Load             float64          // the 1-minute load average at the run's end (other work on the machine shows here)
	Throttled        float64          // slow peers: share of the run the average client was held stopped by its CPU limit
	ServedPlainly    int              // peers the pxeswarm seeder's schedule gave up on and served every piece (its log)
	Cap              float64          // when not all were done: the run's bound, in its floor
	Note             string
}

// rate is the link rate the floors were computed for, in bits/s.
func (rs result) rate() int64 {
	return int64(float64(rs.Size*8) / rs.Floor.Seconds())
}

// usedRatio is d against used/R.
func (rs result) usedRatio(d time.Duration) float64 {
	return d.Seconds() * float64(rs.Size) / float64(rs.Used) / rs.Floor.Seconds()
}

func (rs result) ratio(d time.Duration, tmin time.Duration) float64 {
	return d.Seconds() / tmin.Seconds()
}

func runOne(ctx context.Context, cfg *config, img *benchImage, m method, sc scenario) (res result, err error) {
	res = result{Method: m.name(), Scenario: sc.label(), N: sc.n}
	links := map[int]link{}
	switch sc.kind {
	case "slow":
		links[1] = link{rateBits: cfg.rate / 10}
	case "loss":
		links[1] = link{rateBits: cfg.rate, lossPct: 2}
	case "slowpeers":
		links[0] = link{rateBits: int64(cfg.slowServerLink * float64(cfg.rate))}
	}
	var l *lab
	if sc.kind == "rooms" {
		l, err = newRoomsLab(sc.n, cfg.rate)
	} else {
		l, err = newLab(sc.n, cfg.rate, links)
	}
	if err != nil {
		return res, fmt.Errorf("build the LAN: %w", err)
	}
	defer l.close()
	dir, err := os.MkdirTemp(cfg.work, "run")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	r := &run{cfg: cfg, img: img, m: m, sc: sc, lab: l, dir: dir, t0: time.Now()}
	var limits []*cpuLimit
	defer func() {
		for _, cl := range limits {
			cl.close()
		}
	}()
	if sc.kind == "slowpeers" {
		r.wrap = map[string][]string{}
		for k := 1; k <= sc.n; k++ {
			cl, err := newCPULimit(fmt.Sprintf("pxeswarm-bench-%d-%s", os.Getpid(), clientName(k)), cfg.slowCPU)
			if err != nil {
				return res, err
			}
			limits = append(limits, cl)
			r.wrap[clientName(k)] = cl.wrap()
		}
	}
	defer func() {
		for _, p := range slices.Backward(r.procs) {
			p.kill()
		}
	}()
	tmin := img.floor(m, cfg.rate)
	cap := time.Duration(float64(tmin) * capFactor(m, sc))
	if sc.kind == "slowpeers" {
		// The clients' CPU, not the links, may be the limit: T_min
		// says little about how long they need.
		cap = max(cap, cfg.slowCap)
	}
	ctx, cancel := context.WithTimeout(ctx, cap+time.Minute)
	defer cancel()

	sent0 := l.serverSent()
	var in0 [2]int64
	if l.rooms > 0 {
		in0 = [2]int64{l.roomIn(0), l.roomIn(1)}
	}
	cpu := startCPU()
	srv, err := m.server(ctx, r)
	if err != nil {
		cpu.end()
		return res, err
	}
	r.t0 = time.Now()
	clients := make([]*proc, sc.n+1)
	healthy := func(k int) bool { return !(k == 1 && (sc.kind == "slow" || sc.kind == "killed")) }
	first := sc.n
	if sc.kind == "late" {
		first = sc.n / 2
	}
	for k := 1; k <= first; k++ {
		if k > 1 && sc.kind == "slowpeers" && cfg.slowStagger > 0 {
			// Machines that boot one after another, as make demo's do.
			time.Sleep(cfg.slowStagger)
		}
		if clients[k], err = m.client(ctx, r, k); err != nil {
			cpu.end()
			return res, err
		}
	}
	started, killed := first, false
	deadline := r.t0.Add(cap)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		allDone := started == sc.n
		minFirst := 1.0
		for k := 1; k <= started; k++ {
			pct, at := clients[k].progress(img.size)
			if k <= first {
				minFirst = min(minFirst, pct)
			}
			if healthy(k) && at == 0 {
				allDone = false
			}
			select {
			case <-clients[k].exited:
				if at == 0 && healthy(k) && !(sc.kind == "killed" && k == 1) {
					cpu.end()
					return res, fmt.Errorf("client %d exited (%v) before it was done: %s", k, clients[k].err, clients[k].tail())
				}
			default:
			}
			if sc.kind == "killed" && k == 1 && !killed && pct >= 0.5 {
				clients[1].kill()
				killed = true
			}
		}
		if sc.kind == "late" && started < sc.n && minFirst >= 0.5 {
			for k := started + 1; k <= sc.n; k++ {
				if clients[k], err = m.client(ctx, r, k); err != nil {
					cpu.end()
					return res, err
				}
			}
			started = sc.n
		}
		if allDone {
			break
		}
	}
	res.CPUAvg, res.CPUPeak = cpu.end()
	res.Load = loadAvg()
	if srv != nil {
		if m.name() == "pxeswarm" {
			// Asked to finish, the seeder logs what its schedule
			// revealed, by rule (kept with --trace).
			srv.stop()
		}
		res.ServedPlainly = srv.count(servedPlainly)
	}
	if len(limits) > 0 {
		var th time.Duration
		for _, cl := range limits {
			th += cl.throttled()
		}
		res.Throttled = th.Seconds() / float64(len(limits)) / time.Since(r.t0).Seconds()
	}
	res.ServerSent = l.serverSent() - sent0
	if l.rooms > 0 {
		res.RoomIn = [2]int64{l.roomIn(0) - in0[0], l.roomIn(1) - in0[1]}
	}
	var got int64
	var ngot int
	for k := 1; k <= started; k++ {
		if healthy(k) {
			got += l.clientGot(k)
			ngot++
		}
	}
	if ngot > 0 {
		res.ClientGot = float64(got) / float64(ngot)
	}
	var recv, wasted, fromSeeders int64
	var nsum int
	for k := 1; k <= started; k++ {
		if clients[k] != nil && clients[k].cmd.Process != nil {
			// ip netns exec (and a cgroup's sh) exec the client: same PID.
			res.PeakRSS = max(res.PeakRSS, peakRSS(clients[k].cmd.Process.Pid))
		}
	}
	// Stop every client at once: each may take up to 5 s to exit.
	var wg sync.WaitGroup
	for k := 1; k <= started; k++ {
		if clients[k] != nil && healthy(k) {
			wg.Go(clients[k].stop)
		}
	}
	wg.Wait()
	for k := 1; k <= started; k++ {
		if clients[k] == nil || !healthy(k) {
			continue
		}
		if os.Getenv("BENCH_DEBUG") != "" {
			for _, l := range clients[k].lines {
				if strings.Contains(l, "fetch finished") {
					fmt.Println(k, l)
				}
			}
		}
		if rv, w, fs, ok := clients[k].summary(); ok {
			recv += rv
			wasted += w
			fromSeeders += fs
			nsum++
		}
	}
	if nsum > 0 {
		res.Received = float64(recv) / float64(nsum) / float64(img.size)
		res.Wasted = float64(wasted) / float64(nsum) / float64(img.size)
		if useful := recv - wasted; useful > 0 {
			res.FromPeers = 1 - float64(fromSeeders)/float64(useful)
		}
	}
	var times []time.Duration
	res.Verified = true
	for k := 1; k <= started; k++ {
		if !healthy(k) {
			continue
		}
		res.Healthy++
		_, at := clients[k].progress(img.size)
		if at == 0 {
			res.Verified = false
			continue
		}
		res.Done++
		times = append(times, at)
		if l.rooms > 0 {
			res.RoomTAll[l.room(k)] = max(res.RoomTAll[l.room(k)], at)
		}
		ok, note := verify(img, m, m.target(r, k))
		if !ok {
			res.Verified = false
			res.Note = fmt.Sprintf("client %d's copy %s", k, note)
		} else if note != "" && !strings.Contains(res.Note, note) {
			res.Note = strings.TrimPrefix(res.Note+"; "+note, "; ")
		}
	}
	res.Healthy += sc.n - started
	slices.Sort(times)
	if len(times) > 0 {
		res.Median = times[len(times)/2]
		res.Worst = times[len(times)-1]
	}
	if res.Done == res.Healthy {
		res.TAll = res.Worst
	} else {
		floorName := "T_min"
		if img.fs != "" {
			floorName = map[bool]string{true: "used/R", false: "S/R"}[m.shipsUsed()]
		}
		res.Cap = capFactor(m, sc)
		res.Note = fmt.Sprintf("%d of %d healthy clients not done after %s (%.1f× %s)", res.Healthy-res.Done, res.Healthy, cap.Round(time.Second), res.Cap, floorName)
		// Which ones, and how far they got: a stall near the end and a
		// client that never started are different faults.
		var stuck []string
		for k := 1; k <= started && len(stuck) < 4; k++ {
			if clients[k] == nil || !healthy(k) {
				continue
			}
			if pct, at := clients[k].progress(img.size); at == 0 {
				stuck = append(stuck, fmt.Sprintf("%s at %.0f%%", clientName(k), 100*pct))
			}
		}
		res.Note += ": " + strings.Join(stuck, ", ")
		if os.Getenv("BENCH_DEBUG") != "" {
			for k := 1; k <= started; k++ {
				fmt.Println("client", k, "tail:", clients[k].tail())
			}
		}
	}
	return res, nil
}

// verify checks a client's copy: every byte of the image for a method
// that ships every byte, every byte the filesystem uses for one that
// ships the used blocks (the rest of its target is free space). It says
// what differs, or notes what it let pass.
func verify(img *benchImage, m method, path string) (ok bool, note string) {
	if img.fs == "" || !m.shipsUsed() {
		if sum, err := fileSHA1(path); err != nil || sum != img.sha1 {
			return false, "differs from the image"
		}
		return true, ""
	}
	if sum, err := usedSHA1(path, img.usedExts); err == nil && sum == img.usedSHA1 {
		return true, ""
	}
	diff, err := differingSectors(img.path, path, img.usedExts)
	if err != nil {
		return false, fmt.Sprintf("could not be compared: %v", err)
	}
	// partclone.ntfs copies the volume's clusters; the backup boot
	// sector, the partition's last sector, lies past them, so a restore
	// leaves whatever the target had there (ntfsfix -n then reports the
	// alternate boot sector BAD). usedmap counts it as used, so pxeswarm
	// ships it.
	if img.fs == "ntfs" && len(diff) == 1 && diff[0].Off >= img.size-512 {
		return true, "backup boot sector not restored"
	}
	var parts []string
	for _, e := range diff[:min(len(diff), 3)] {
		parts = append(parts, fmt.Sprintf("%d+%d", e.Off, e.Len))
	}
	return false, fmt.Sprintf("differs from the image in %d used ranges (bytes %s…)", len(diff), strings.Join(parts, ", "))
}

func fileSHA1(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// loadAvg is the 1-minute load average (0 when it cannot be read).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var v float64
	fmt.Sscan(string(b), &v)
	return v
}

// peakRSS is a live process's peak resident set (VmHWM), bytes; 0 when
// it cannot be read.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(v, &kb)
			return kb << 10
		}
	}
	return 0
}
