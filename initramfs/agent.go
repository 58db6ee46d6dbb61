package initramfs

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/initramfs/dhclient"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/version"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Defaults of Config's paths.
const (
	DefaultKeyPath    = "/etc/pxeswarm/plan-key.pub"
	DefaultCmdline    = "/proc/cmdline"
	DefaultShell      = "/bbin/gosh" // u-root's shell
	FallbackShell     = "/bin/sh"
	DefaultResolvConf = "/etc/resolv.conf"
)

// Config configures the agent. The zero value runs on the real machine:
// the paths above, DHCP on every Ethernet link, the machine's disks, and
// a real reboot. Tests set ServerURL and MAC (no DHCP), Disks to a fake
// machine or a loop device, and the Reboot and StartShell hooks.
type Config struct {
	// ServerURL, if set, is the server (for example
	// "http://198.18.0.1:8080") and the network is taken as already
	// configured: no links are touched and no DHCP is done. For tests and
	// machines set up by hand. Empty: DHCP's URL option, then
	// pxeswarm.server= on the kernel command line.
	ServerURL string
	// MAC, if set, is the machine's MAC for the plan and reports
	// (aa:bb:cc:dd:ee:ff). Empty: pxeswarm.mac= from the kernel command
	// line, then the MAC of the link that got the lease.
	MAC string
	// KeyPath is the server's public plan key (plan-key.pub, built into
	// the initramfs). Default DefaultKeyPath.
	KeyPath string
	// Cmdline is the file holding the kernel command line. Default
	// DefaultCmdline; "-" reads none.
	Cmdline string
	// Coldplug, if set, loads the drivers for the machine's devices (NICs,
	// disk controllers) and returns the modules it loaded; in the
	// initramfs this is coldplug.Load. An error is logged, not fatal: a
	// missing driver shows up as a missing link or disk later, with a
	// clearer message.
	Coldplug func(ctx context.Context, log *slog.Logger) ([]string, error)
	// Disks says where the disks are (Sys and Dev roots, mount table,
	// boot medium). The zero value is the running machine.
	Disks partition.Config
	// Shell is the shell to stop at after an error with on_error "shell",
	// or when the plan's after says "shell". Default DefaultShell; if it
	// does not exist, FallbackShell.
	Shell string
	// StartShell runs the shell and returns when it exits. Default: run it
	// on the agent's own stdin, stdout and stderr (the console).
	StartShell func(ctx context.Context, path string) error
	// Reboot restarts or powers off the machine (RebootRestart,
	// RebootPowerOff); it returns only on failure. Default: sync, then
	// reboot(2).
	Reboot func(cmd int) error
	// OnError is what the agent does after an error when nothing else
	// says: protocol.OnErrorHalt, OnErrorRetry or OnErrorShell. A verified
	// plan's on_error wins (once a plan verified, it holds for the rest
	// of the run), then, when the machine booted from a rescue stick,
	// pxeswarm.on_error= from the stick's boot entry. Empty: retry on a
	// network boot (without a verified plan nothing was written), halt in
	// a stick's local mode. There is deliberately no agent flag for it:
	// on a network boot the kernel command line, and with it u-root's
	// uroot.uinitargs, comes from the network.
	OnError string
	// Halt waits for ever after an error with on_error "halt": no shell,
	// and the agent never exits (u-root's init would start a shell).
	// Default: sleep until the machine is reset, whatever ctx says. Tests
	// set a hook that returns; Run then returns the error.
	Halt func()
	// RetryWait is the first wait before starting over after an error
	// with on_error "retry" (default 15 s); each further attempt waits
	// twice as long, up to RetryMaxWait (default 5 min).
	RetryWait, RetryMaxWait time.Duration
	// Input is where the console menu reads a person's choices (several
	// images or disks on a rescue stick). Default os.Stdin.
	Input io.Reader
	// EFIVars is where efivarfs is (or gets) mounted, to read which
	// partition the boot loader was loaded from and the Secure Boot
	// state. Default partition.DefaultEFIVars; "-" reads none.
	EFIVars string
	// Proc is the procfs mount the inventory reads (cpuinfo, meminfo).
	// Default DefaultProc. The inventory's sysfs is Disks.Sys.
	Proc string
	// Console receives the markers and the progress bar. Default stdout.
	// Pass a *Console (NewConsole) and route the log through it too, so
	// log lines do not break the bar.
	Console io.Writer
	// HTTP is the client for the plan, the torrent and reports. Default: a
	// client with no proxy and a 2 minute timeout.
	HTTP *http.Client
	// DHCP configures dhclient.Discover (Interface is set per link).
	DHCP dhclient.Config
	// ResolvConf receives the lease's name servers. Default
	// DefaultResolvConf.
	ResolvConf string
	// LinkTimeout bounds the wait for an Ethernet link to appear after
	// coldplug (default 30 s); CarrierTimeout the wait for a carrier after
	// the links are up (default 15 s); DiskTimeout the wait for a disk
	// (default 30 s).
	LinkTimeout, CarrierTimeout, DiskTimeout time.Duration
	// PlanTries is how often the plan is fetched before giving up when
	// the server cannot be reached (default 5; 1 s, 2 s, 4 s … apart).
	PlanTries int
	// ReportEvery is the status report period (default 2 s);
	// ProgressEvery the console refresh (default 1 s).
	ReportEvery, ProgressEvery time.Duration
	// Listen is host:port for BitTorrent peers; "" any address, a free
	// port.
	Listen string
	// Tuning holds the swarm's knobs; zero fields take imager's defaults.
	Tuning imager.Tuning
	// NoReadBack skips reading the image back from the disk after it is
	// written. The IMAGE DONE marker then has no sha256, only the
	// info-hash: every piece was SHA-1 checked as it arrived, but nothing
	// proves it reached the disk. pxeswarm.readback=0 does the same.
	NoReadBack bool
}

func (c Config) withDefaults() Config {
	if c.KeyPath == "" {
		c.KeyPath = DefaultKeyPath
	}
	if c.Cmdline == "" {
		c.Cmdline = DefaultCmdline
	}
	if c.Shell == "" {
		c.Shell = DefaultShell
	}
	if c.StartShell == nil {
		c.StartShell = runShell
	}
	if c.Reboot == nil {
		c.Reboot = sysReboot
	}
	if c.Halt == nil {
		c.Halt = haltForever
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}
	}
	if c.ResolvConf == "" {
		c.ResolvConf = DefaultResolvConf
	}
	if c.Input == nil {
		c.Input = os.Stdin
	}
	if c.EFIVars == "" {
		c.EFIVars = partition.DefaultEFIVars
	}
	if c.Proc == "" {
		c.Proc = DefaultProc
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.LinkTimeout, 30*time.Second)
	def(&c.CarrierTimeout, 15*time.Second)
	def(&c.DiskTimeout, 30*time.Second)
	def(&c.ReportEvery, 2*time.Second)
	def(&c.ProgressEvery, time.Second)
	def(&c.RetryWait, 15*time.Second)
	def(&c.RetryMaxWait, 5*time.Minute)
	if c.PlanTries <= 0 {
		c.PlanTries = 5
	}
	return c
}

// agent is one run.
type agent struct {
	cfg      Config
	log      *slog.Logger
	con      *Console
	cmd      Cmdline
	rep      *reporter // nil until the server is known (never in local mode)
	readBack bool
	in       *bufio.Reader // the console's input, for choose

	// What to do after an error (see Config.OnError): the last verified
	// plan's on_error, kept across attempts; whether this attempt booted
	// from a rescue stick, and in its local mode.
	planOnError  string
	stick, local bool

	mu    sync.Mutex
	phase string          // protocol.Phase*
	prog  imager.Progress // the swarm's
	rb    imager.Progress // the read-back's, or the gaps' (State says which)
	rbAt  time.Duration   // rb.Elapsed when rb was last shown
	// peerPort is where the swarm session takes peer connections (0
	// before it has joined).
	peerPort uint16
}

// Run takes the machine from power-on to a written disk: coldplug,
// network, plan, disk, swarm, read-back, seeding, then the plan's
// after-action. A reboot or power-off does not return (Config.Reboot
// returns nil only in tests); "shell" returns nil when the shell exits.
//
// On any error Run prints the ERROR marker, reports the failure, then
// does what on_error says (see Config.OnError): "halt" prints the halt
// marker and waits for ever (Config.Halt; Run returns the error only if
// that hook returns), "retry" prints the retry marker, waits a back-off
// and starts over from the kernel command line, "shell" runs the shell
// and returns the error once it exits. The machine is never rebooted
// into a half-written disk. If ctx ends while waiting to retry, the agent
// halts.
func (c Config) Run(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c = c.withDefaults()
	a := &agent{cfg: c, log: log, con: console(c.Console)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait := c.RetryWait
	for attempt := 1; ; attempt++ {
		// Each attempt's goroutines (lease renewal, reports) end with it.
		actx, stop := context.WithCancel(ctx)
		after, err := a.run(actx)
		if err == nil {
			if err = a.after(after); err == nil {
				stop()
				return nil
			}
		}
		a.fail(ctx, err)
		do, from := a.onError()
		a.log.Info("after the error", "on_error", do, "from", from, "attempt", attempt)
		switch do {
		case protocol.OnErrorShell:
			a.shell()
			stop()
			return err
		case protocol.OnErrorRetry:
			stop()
			a.con.Println(markRetry(wait, attempt+1, from))
			if sleep(ctx, wait) == nil {
				wait = min(2*wait, max(c.RetryMaxWait, c.RetryWait))
				a.reset()
				continue
			}
			a.log.Warn("stopped while waiting to retry; halting", "err", ctx.Err())
		}
		stop()
		a.con.Println(markHalt(do, from))
		a.con.Drain()
		a.cfg.Halt()
		return err
	}
}

// onError is what to do after an error, and where that came from (see
// Config.OnError).
func (a *agent) onError() (do, from string) {
	switch {
	case a.planOnError != "":
		return a.planOnError, "plan"
	case a.stick && a.cmd.OnError != "":
		return a.cmd.OnError, FromCmdline
	case a.cfg.OnError != "":
		return a.cfg.OnError, FromConfig
	case a.local:
		return protocol.OnErrorHalt, "default"
	}
	return protocol.OnErrorRetry, "default"
}

// reset clears one attempt's state before the next starts over. The
// last verified plan's on_error stays.
func (a *agent) reset() {
	a.mu.Lock()
	a.phase, a.prog, a.rb, a.rbAt, a.peerPort = "", imager.Progress{}, imager.Progress{}, 0, 0
	a.mu.Unlock()
	a.rep, a.cmd, a.stick, a.local = nil, Cmdline{}, false, false
}

// haltForever is the default Config.Halt: the machine stays at the error
// on its console until someone resets it. It sleeps rather than blocking
// on nothing, so the Go runtime never sees a deadlock and exits (and
// u-root's init would then start a shell).
func haltForever() {
	for {
		time.Sleep(time.Hour)
	}
}

func (a *agent) setPhase(p string) {
	a.mu.Lock()
	a.phase = p
	a.mu.Unlock()
}

// report sends a report of the current phase and progress now.
func (a *agent) report(ctx context.Context, msg string) error {
	if a.rep == nil {
		return nil
	}
	return a.rep.sendFunc(ctx, func() protocol.Report {
		r := a.current()
		r.Message = msg
		return r
	})
}

// current is the report for the current phase and progress.
func (a *agent) current() protocol.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	phase, p := a.phase, a.prog
	switch {
	case phase == protocol.PhaseVerifying:
		p = a.rb
	case phase == protocol.PhaseImaging && p.State == imager.StateVerifying:
		phase = protocol.PhaseVerifying
	}
	rate := p.Rate
	if phase == protocol.PhaseSeeding {
		rate = p.UpRate
	}
	r := protocol.Report{Phase: phase, BytesDone: p.Done, BytesTotal: p.Total, RateBPS: int64(max(rate, 0)), Peers: p.Peers}
	if r.BytesTotal > 0 && r.BytesDone > r.BytesTotal {
		r.BytesDone = r.BytesTotal
	}
	r.Received, r.PeerPort = receivedOf(a.prog.Sources), a.peerPort
	return r
}

// receivedOf is what a report carries of the swarm's sources: the
// largest protocol.MaxReportSources that a report can name (the server's
// seeders as protocol.SourceServer, peers by IP:port).
func receivedOf(srcs []imager.Source) []protocol.Received {
	var ret []protocol.Received
	for _, s := range srcs { // largest first
		if len(ret) == protocol.MaxReportSources {
			break
		}
		from := s.Addr
		if from == imager.ServerSource {
			from = protocol.SourceServer
		}
		r := protocol.Received{From: from, Bytes: min(s.Bytes, protocol.MaxSourceBytes)}
		one := protocol.Report{Phase: protocol.PhaseImaging, Received: []protocol.Received{r}}
		if s.Bytes <= 0 || one.Check() != nil {
			continue // an address a report cannot name (a zone, say)
		}
		ret = append(ret, r)
	}
	return ret
}

// inventory reads the machine's hardware for the server (it goes with
// the first report on the plan's task) and logs a summary.
func (a *agent) inventory() protocol.Inventory {
	sys := cmp.Or(a.cfg.Disks.Sys, "/sys")
	inv := collectInventory(sys, a.cfg.Proc, a.cfg.EFIVars)
	disks := make([]string, 0, len(inv.Disks))
	for _, d := range inv.Disks {
		disks = append(disks, fmt.Sprintf("%s %s %s %s", d.Name, cmp.Or(d.Bus, "?"), bytesize.Format(d.SizeBytes), cmp.Or(d.Model, "-")))
	}
	nics := make([]string, 0, len(inv.NICs))
	for _, n := range inv.NICs {
		nics = append(nics, fmt.Sprintf("%s %s %s %dMb/s", n.Name, cmp.Or(n.Driver, "?"), n.MAC, n.SpeedMbps))
	}
	a.log.Info("inventory", "vendor", inv.System.Vendor, "product", inv.System.Product, "serial", inv.System.Serial,
		"cpu", inv.CPU.Model, "cores", inv.CPU.Cores, "threads", inv.CPU.Threads, "memory", bytesize.Format(inv.MemoryBytes),
		"firmware", inv.Firmware, "secure_boot", cmp.Or(inv.SecureBoot, "unknown"),
		"disks", strings.Join(disks, "; "), "nics", strings.Join(nics, "; "))
	return inv
}

// onProgress is the swarm's progress callback.
func (a *agent) onProgress(p imager.Progress) {
	a.mu.Lock()
	a.prog = p
	show := (a.phase == protocol.PhaseImaging && a.rb.State != imager.StateGaps) || a.phase == protocol.PhaseSeeding
	a.mu.Unlock()
	if show {
		a.con.Progress(p)
	}
}

func (a *agent) run(ctx context.Context) (after string, err error) {
	c := a.cfg
	a.con.Println(markVersion(version.String()))
	a.log.Info("pxeswarm agent starting", "version", version.String())
	if c.Cmdline != "-" {
		data, err := os.ReadFile(c.Cmdline)
		if err != nil {
			a.log.Warn("cannot read the kernel command line", "file", c.Cmdline, "err", err)
		} else {
			a.cmd, err = ParseCmdline(string(data))
			if err != nil {
				a.log.Warn("kernel command line: ignoring bad values", "err", err)
			}
			a.log.Info("kernel command line", "server", a.cmd.Server, "mac", a.cmd.MAC, "task", a.cmd.Task, "debug", a.cmd.Debug)
		}
	}
	a.readBack = !c.NoReadBack && !a.cmd.NoReadBack
	if c.Coldplug != nil {
		start := time.Now()
		mods, err := c.Coldplug(ctx, a.log)
		if err != nil {
			a.log.Warn("coldplug: some drivers did not load", "err", err)
		}
		a.log.Info("coldplug done", "modules", len(mods), "took", time.Since(start).Round(time.Millisecond))
		a.con.Println(markColdplug(len(mods)))
	}
	// After coldplug: Debian builds efivarfs as a module.
	a.reportSecureBoot()

	// The rescue stick, if the machine booted from one: never a target,
	// and in local mode the source.
	a.local = a.cmd.Mode == ModeLocal
	st, bootMode, err := a.findStick(ctx)
	if err != nil {
		return "", err
	}
	a.stick, a.local = st != nil, bootMode == ModeLocal
	if a.cmd.OnError != "" && !a.stick {
		a.log.Warn("ignoring pxeswarm.on_error on a network boot: its command line comes from the network; the signed plan's on_error decides", "cmdline_on_error", a.cmd.OnError)
	}
	if bootMode == ModeLocal {
		return a.runLocal(ctx, st)
	}

	// Network.
	server, from, mac, l, err := a.network(ctx)
	if err != nil {
		return "", err
	}
	if l != nil {
		a.con.Println(markLease(server, from, l.link.Attrs().Name, l.d.Addr.String()))
		go a.keepLease(ctx, l)
	} else {
		a.con.Println(markLease(server, from, "", ""))
	}
	a.rep = newReporter(c.HTTP, server, mac, a.log)
	a.rep.setInventory(a.inventory())
	a.setPhase(protocol.PhaseBooting)
	a.report(ctx, "agent "+version.String()+" up")

	// Plan.
	plan, err := a.plan(ctx, server, mac)
	if err != nil {
		return "", err
	}
	a.con.Println(markPlan(plan.TaskID, plan.Image))
	a.log.Info("plan verified", "task", plan.TaskID, "image", plan.Image, "target", fmt.Sprintf("%+v", plan.Target),
		"create_table", plan.CreateTable, "discard", plan.Discard, "check", plan.CheckMode, "seed_for", plan.SeedFor, "after", plan.After, "on_error", plan.OnError)
	if a.cmd.Task != "" && a.cmd.Task != plan.TaskID {
		a.log.Warn("the kernel command line names another task than the plan; following the signed plan", "cmdline_task", a.cmd.Task, "plan_task", plan.TaskID)
	}
	a.planOnError = plan.OnError
	a.rep.setTask(plan.TaskID, plan.ReportToken)
	if err := a.report(ctx, "plan verified"); errors.Is(err, ErrTaskEnded) {
		return "", a.ended(false)
	}
	if plan.Action == protocol.ActionCapture {
		err = a.capture(ctx, plan, server)
	} else {
		err = a.deploy(ctx, plan)
	}
	if err != nil {
		return "", err
	}
	return plan.After, nil
}

// deploy carries out a deploy plan: the torrent it pins, written from the
// swarm, seeded for the plan's SeedFor, then reported done.
func (a *agent) deploy(ctx context.Context, plan *protocol.Plan) error {
	c := a.cfg
	im, err := imager.LoadURL(ctx, c.HTTP, plan.Torrent)
	if err != nil {
		return &Error{What: "cannot load the image torrent " + plan.Torrent, Err: err, Network: isNetErr(err),
			Do: "check that the server still publishes image " + plan.Image + " (GET /api/status) and that this network reaches it"}
	}
	if !strings.EqualFold(im.InfoHash.HexString(), plan.InfoHash) {
		return &Error{What: fmt.Sprintf("the torrent at %s has info-hash %s but the signed plan pins %s", plan.Torrent, im.InfoHash.HexString(), strings.ToLower(plan.InfoHash)),
			Err: ErrInfoHashMismatch,
			Do:  "nothing was written; the image changed on the server after the plan was made, or something rewrites HTTP on the way: reboot to fetch a fresh plan, and if it repeats check the server's image files"}
	}
	a.log.Info("image torrent", "image", im.String(), "size", bytesize.Format(im.Length), "pieces", im.NumPieces(), "table", im.Layout.Table)
	mode, err := imager.ParseMode(plan.CheckMode)
	if err != nil || mode == imager.ModeSeed {
		return &Error{What: "the plan's check mode " + plan.CheckMode + " is not one the agent knows", Err: err, Do: "set check to fresh or verify on the server"}
	}

	// Report every few seconds from here on, and stop as soon as the
	// server ends the task.
	imgCtx, stopImg := context.WithCancel(ctx)
	defer stopImg()
	go a.rep.every(imgCtx, c.ReportEvery, a.current)
	go func() {
		select {
		case <-a.rep.Ended():
			stopImg()
		case <-imgCtx.Done():
		}
	}()

	var sess *imager.Session
	defer func() {
		if sess != nil {
			sess.Close()
		}
	}()
	msg := ""
	_, err = a.write(imgCtx, job{
		im: im, from: "the plan", choose: chooseTarget(plan.Target, im), createTable: plan.CreateTable, discard: plan.Discard,
		again: "reboot to try again",
		fill: func(ctx context.Context, parts []imager.Part) error {
			icfg := imager.Config{Image: im, Parts: parts, Mode: mode, Listen: c.Listen, Trackers: plan.Trackers, Peers: plan.Seeders,
				Tuning: c.Tuning, Progress: a.onProgress, ProgressEvery: c.ProgressEvery}
			var err error
			if sess, err = icfg.Join(ctx, a.log); err != nil {
				return &Error{What: "cannot join the swarm for " + im.Name, Err: err, Do: "check the log above; reboot to try again"}
			}
			if ap, err := netip.ParseAddrPort(sess.ListenAddr()); err == nil {
				a.mu.Lock()
				a.peerPort = ap.Port()
				a.mu.Unlock()
			}
			if err := sess.Wait(ctx); err != nil {
				return err
			}
			p := sess.Progress()
			a.log.Info("image written", "took", p.Took, "downloaded", bytesize.Format(p.Downloaded), "from_seeders", bytesize.Format(p.FromSeeders),
				"uploaded", bytesize.Format(p.Uploaded), "bad_pieces", p.BadPieces)
			return nil
		},
		// The session that fetched the image seeds it on for SeedFor.
		seed: func(_ context.Context, _ []imager.Part, digest string) error {
			msg = "infohash=" + im.InfoHash.HexString()
			if digest != "" {
				msg = "sha256=" + digest + " " + msg
			}
			seedFor, _ := time.ParseDuration(plan.SeedFor) // checked by Verify
			a.setPhase(protocol.PhaseSeeding)
			if err := a.report(ctx, msg); !errors.Is(err, ErrTaskEnded) && seedFor > 0 {
				a.con.Println(markSeeding(seedFor.String()))
				select {
				case <-time.After(seedFor):
				case <-a.rep.Ended():
					a.log.Info("the server ended the task; stopping seeding", "state", a.rep.EndState())
				case <-ctx.Done():
					return &Error{What: "stopped while seeding", Err: ctx.Err(), Do: "the image is complete on the disk; reboot by hand"}
				}
			}
			stopImg()
			err := sess.Close()
			sess = nil
			if err != nil {
				return &Error{What: "flushing the image failed", Err: err, Do: "check the disk; start a new task"}
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	a.setPhase(protocol.PhaseDone)
	a.report(ctx, msg)
	return nil
}

// setReadBack records the read-back's progress and shows it.
func (a *agent) setReadBack(done, total int64, start time.Time) {
	a.setStep(imager.StateVerifying, done, total, start)
}

// setStep records the progress of a step the agent runs itself, the
// read-back (StateVerifying) or the gaps (StateGaps), and shows it.
func (a *agent) setStep(state imager.State, done, total int64, start time.Time) {
	el := time.Since(start)
	p := imager.Progress{State: state, Total: total, Done: done, Elapsed: el.Round(time.Millisecond)}
	if s := el.Seconds(); s > 0 {
		p.Rate = float64(done) / s
	}
	a.mu.Lock()
	a.rb = p
	show := done == total || done == 0 || p.Elapsed-a.rbAt >= a.cfg.ProgressEvery
	if show {
		a.rbAt = p.Elapsed
	}
	a.mu.Unlock()
	if show {
		a.con.Progress(p)
	}
}

func isEnded(r *reporter) bool {
	select {
	case <-r.Ended():
		return true
	default:
		return false
	}
}

// ended is the error for a task the server ended under the agent, and
// nil while it has not (or when there is no server, on a rescue stick).
func (a *agent) ended(written bool) error {
	if a.rep == nil || !isEnded(a.rep) {
		return nil
	}
	do := "nothing was written; start a new task for this machine if it still needs imaging"
	if written {
		do = "the disk is half-written and will not be booted: start a new task for this machine"
	}
	a.rep.mu.Lock()
	id := a.rep.taskID
	a.rep.mu.Unlock()
	return &Error{What: fmt.Sprintf("the server ended task %s (now %s)", id, a.rep.EndState()), Err: ErrTaskEnded, Do: do}
}

// network finds the server: Config.ServerURL as is, or DHCP and the URL
// from its option or the kernel command line.
func (a *agent) network(ctx context.Context) (server, from, mac string, l *lease, err error) {
	c := a.cfg
	if c.ServerURL != "" {
		mac = cmp.Or(c.MAC, a.cmd.MAC)
		if mac == "" {
			return "", "", "", nil, &Error{What: "the agent does not know this machine's MAC", Err: ErrNoMAC,
				Do: "boot with pxeswarm.mac=aa:bb:cc:dd:ee:ff (the server's iPXE script adds it) or let the agent do DHCP"}
		}
		a.log.Info("server URL", "url", c.ServerURL, "from", FromConfig, "mac", mac)
		return strings.TrimRight(c.ServerURL, "/"), FromConfig, mac, nil, nil
	}
	l, err = a.dhcp(ctx, cmp.Or(c.MAC, a.cmd.MAC))
	if err != nil {
		return "", "", "", nil, &Error{What: "no network", Err: err, Network: true,
			Do: "check the cable and the switch port, that the NIC's driver is in the initramfs, and that a DHCP server answers on this network"}
	}
	server, from = a.serverFrom(l)
	if server == "" {
		return "", "", "", nil, &Error{What: "nothing names the pxeswarm server", Err: ErrNoServer, Network: true,
			Do: "let the DHCP server send the server URL option (pxeswarm serve does; option 224 by default), or boot with pxeswarm.server=http://…"}
	}
	a.log.Info("server URL", "url", server, "from", from, "dhcp_url", l.d.ServerURL, "dhcp_url_from", l.d.ServerURLFrom, "cmdline_url", a.cmd.Server)
	mac = cmp.Or(c.MAC, a.cmd.MAC, l.mac)
	return server, from, mac, l, nil
}

// serverFrom is the server a lease names (its URL option), else the
// kernel command line's pxeswarm.server=, and which of the two it was;
// "" if neither names one.
func (a *agent) serverFrom(l *lease) (server, from string) {
	server, from = l.d.ServerURL, FromDHCP
	if server != "" && !httpURL(server) {
		a.log.Warn("the DHCP server URL option is not an http URL; ignoring it", "url", server)
		server = ""
	}
	if server == "" {
		server, from = a.cmd.Server, FromCmdline
	}
	return strings.TrimRight(server, "/"), from
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// plan fetches and verifies this machine's plan.
func (a *agent) plan(ctx context.Context, server, mac string) (*protocol.Plan, error) {
	keyData, err := os.ReadFile(a.cfg.KeyPath)
	if err == nil {
		var pub []byte
		if pub, err = protocol.ParsePublicKey(keyData); err == nil {
			return a.fetchPlan(ctx, server, mac, pub)
		}
	}
	return nil, &Error{What: "no usable plan key at " + a.cfg.KeyPath, Err: fmt.Errorf("%w: %v", ErrNoKey, err),
		Do: "rebuild the initramfs with the server's plan-key.pub"}
}

func (a *agent) fetchPlan(ctx context.Context, server, mac string, pub []byte) (*protocol.Plan, error) {
	// A fresh nonce per boot: the server signs it into the plan, so a plan
	// recorded earlier is useless to a rogue server.
	nonce, err := protocol.NewNonce()
	if err != nil {
		return nil, &Error{What: "cannot make a nonce for the plan request", Err: err, Do: "reboot to try again"}
	}
	u := server + "/plan/" + url.PathEscape(mac) + "?" + protocol.NonceParam + "=" + nonce
	var data []byte
	wait := time.Second
	for try := 1; ; try++ {
		var status int
		var err error
		data, status, err = a.get(ctx, u, protocol.MaxPlanBytes+1)
		if err == nil && status == http.StatusOK {
			break
		}
		if status == http.StatusNotFound {
			return nil, &Error{What: fmt.Sprintf("the server has no task for %s", mac), Err: fmt.Errorf("%w: %v", ErrNoPlan, err),
				Do: "create a task for this machine on the server (POST /api/tasks), then reboot it"}
		}
		if err == nil {
			err = fmt.Errorf("GET %s: %d", u, status)
		}
		if try >= a.cfg.PlanTries || ctx.Err() != nil {
			return nil, &Error{What: "cannot fetch the plan from " + server, Err: err, Network: isNetErr(err),
				Do: "check that pxeswarm serve runs and that this network reaches it"}
		}
		a.log.Warn("cannot fetch the plan; retrying", "url", u, "try", try, "err", err, "wait", wait)
		if sleep(ctx, wait) != nil {
			return nil, &Error{What: "cannot fetch the plan from " + server, Err: ctx.Err()}
		}
		wait *= 2
	}
	plan, err := protocol.Verify(data, pub, mac, nonce)
	switch {
	case errors.Is(err, protocol.ErrReplay):
		return nil, &Error{What: "the plan is a replay: signed by this server, but for an earlier request", Err: err,
			Do: "nothing was written; another DHCP or HTTP server on this network may be sending old plans: find it (the lease line above names the server that answered), then reboot"}
	case errors.Is(err, protocol.ErrBadSignature):
		return nil, &Error{What: "the plan is not signed by this server's key", Err: err,
			Do: "nothing was written; rebuild the initramfs with the server's plan-key.pub"}
	case err != nil:
		return nil, &Error{What: "the server's plan is not valid", Err: err,
			Do: "nothing was written; check the task's settings on the server, and that server and agent are the same version"}
	}
	return plan, nil
}

// get fetches u, at most limit bytes. A non-200 answer returns its status
// and the server's error text.
func (a *agent) get(ctx context.Context, u string, limit int64) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := a.cfg.HTTP.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, fmt.Errorf("GET %s: %s: %s", u, resp.Status, clipText(strings.TrimSpace(string(data)), 300))
	}
	return data, resp.StatusCode, nil
}

// waitDisks lists the disks until there is one that is not the medium
// the agent booted from, or DiskTimeout (then it returns what it saw, and
// Choose says so). While it waits it runs coldplug again each round: a
// controller's disks can show up after coldplug's quiet time has ended
// (a slow USB disk, a card found late), and their driver (sd_mod,
// mmc_block) loads only when coldplug sees the new device. Coldplug
// skips what is loaded.
func (a *agent) waitDisks(ctx context.Context) ([]partition.Disk, error) {
	deadline := time.Now().Add(a.cfg.DiskTimeout)
	for round := 0; ; round++ {
		disks, err := a.cfg.Disks.List(a.log)
		if err == nil && slices.ContainsFunc(disks, func(d partition.Disk) bool { return d.Boot == "" }) {
			return disks, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, &Error{What: "cannot list the disks", Err: err, Do: "is sysfs mounted on /sys? check the log above"}
			}
			return disks, nil // Choose says what it saw
		}
		if a.cfg.Coldplug != nil && round > 0 {
			mods, err := a.cfg.Coldplug(ctx, a.log)
			a.log.Info("waiting for a disk: coldplug again", "loaded", len(mods), "err", err)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, &Error{What: "stopped while waiting for disks", Err: err}
		}
	}
}

// diskAdvice says what to do about a disk error.
func diskAdvice(err error) string {
	switch {
	case errors.Is(err, partition.ErrTooSmall):
		return "nothing was written; give the task a larger disk (or a smaller image)"
	case errors.Is(err, partition.ErrBootMedium):
		return "nothing was written; the agent never writes the medium it booted from: target another disk"
	case errors.Is(err, partition.ErrAmbiguous):
		return "nothing was written; name the disk in the task's target so only one partition matches"
	case errors.Is(err, partition.ErrNoTarget):
		return "nothing was written; check that the disk's driver is in the initramfs and that the task's target names a disk this machine has (see the disk lines above)"
	case errors.Is(err, partition.ErrInUse):
		return "nothing was written; the target is mounted or held: reboot into the agent without mounting it"
	case errors.Is(err, partition.ErrReadOnly):
		return "nothing was written; the disk is read-only: check its write-protect switch, or target another disk"
	case errors.Is(err, partition.ErrLayout):
		return "nothing was written; the image's partition layout does not fit this target: rebuild the image or change the task's target"
	}
	return "check the disk and the log above, then reboot to try again"
}

// after does the plan's after-action.
func (a *agent) after(what string) error {
	switch what {
	case "poweroff":
		a.con.Println(MarkPowerOff)
		a.log.Info("powering off")
		a.con.Drain()
		if err := a.cfg.Reboot(RebootPowerOff); err != nil {
			return &Error{What: "cannot power off", Err: err, Do: "the image is complete: power the machine off by hand"}
		}
	case "shell":
		a.shell()
	default: // "reboot", as Verify allows nothing else
		a.con.Println(MarkReboot)
		a.log.Info("rebooting")
		a.con.Drain()
		if err := a.cfg.Reboot(RebootRestart); err != nil {
			return &Error{What: "cannot reboot", Err: err, Do: "the image is complete: reset the machine by hand"}
		}
	}
	return nil
}

// fail shows, reports and dumps an error; Run then does what on_error
// says.
func (a *agent) fail(ctx context.Context, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{What: "the agent stopped", Err: err, Do: "check the log above, then reboot to try again"}
	}
	a.con.Println(markError(e.Error(), e.Do))
	a.log.Error("agent failed", "err", err)
	if e.Network {
		dumpNetwork(a.con.Println)
	}
	if a.rep != nil {
		r := protocol.Report{Phase: protocol.PhaseFailed, Error: clipText(oneLine(e.Error()+" — "+e.Do), protocol.MaxReportText-8)}
		a.rep.mu.Lock()
		if a.rep.taskID == "" {
			// No verified plan: the task the iPXE script named is the best
			// guess at whose failure this is.
			r.TaskID = a.cmd.Task
		}
		a.rep.mu.Unlock()
		if err := a.rep.send(ctx, r); err != nil && r.TaskID != "" && !errors.Is(err, ErrTaskEnded) {
			// The task ID may be stale; at least tell the machine record.
			r.TaskID = ""
			a.rep.send(ctx, r)
		}
	}
}

// shell runs the configured shell (or the fallback) and waits for it.
func (a *agent) shell() {
	path := a.cfg.Shell
	if _, err := os.Stat(path); err != nil {
		if _, err2 := os.Stat(FallbackShell); err2 == nil {
			a.log.Info("shell not found; using the fallback", "shell", path, "fallback", FallbackShell)
			path = FallbackShell
		}
	}
	a.con.Println(markShell(path))
	if err := a.cfg.StartShell(context.Background(), path); err != nil {
		a.log.Error("shell", "path", path, "err", err)
	}
}

// runShell is the default StartShell: the shell on the agent's console.
func runShell(ctx context.Context, path string) error {
	cmd := exec.CommandContext(ctx, path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
