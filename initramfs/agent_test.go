package initramfs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/partition/partitiontest"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/tracker"
)

const (
	MiB     = 1 << 20
	testMAC = "52:54:00:aa:00:01"
)

// testImage makes a two-partition GPT image of random bytes, 1 MiB
// pieces, the second part not a whole number of pieces.
func testImage(t testing.TB, name string, seed uint64) (*imager.Image, []string, [][]byte) {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 7))
	var paths []string
	var parts [][]byte
	for i, n := range []int{3*MiB + 12345, 2*MiB + 7} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, fmt.Sprintf("part%d.img", i+1))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths, parts = append(paths, p), append(parts, b)
	}
	im, err := imager.Create(context.Background(), slog.New(slog.DiscardHandler), imager.CreateConfig{
		Name: name, Sources: paths, Table: "gpt", PieceLength: imager.MinPieceLength,
		Parts: []imager.PartInfo{
			{Number: 1, Size: 4 * MiB, Label: "ESP", Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
			{Number: 2, Size: 4 * MiB, Label: "root"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return im, paths, parts
}

// server is a real boot server (pxe.HTTPConfig with a bbolt store and a
// signed-plan key), a real tracker on its port and a real seeder, all on
// loopback. tamper, if set, may rewrite any answer.
type server struct {
	url     string
	store   *pxe.Store
	key     ed25519.PrivateKey
	pubPath string
	im      *imager.Image
	parts   [][]byte

	// seeder is the test seeder's peer address, which plans carry as
	// Plan.Seeders as the real server's do; seeders has other images'.
	seeder  string
	seeders map[string]string
	// cat is the server's catalog and caps its captures (admin token
	// testAdminToken).
	cat  *catalog.Catalog
	caps *pxe.Captures
	trk  *tracker.Tracker

	mu      sync.Mutex
	reports []protocol.Report
	status  []int // of each report
	tamper  func(path string, body []byte) []byte
}

// testAdminToken is the test server's admin token.
const testAdminToken = "test-admin-token"

func newServer(t *testing.T) *server {
	t.Helper()
	im, paths, parts := testImage(t, "demo", 1)
	return newServerImage(t, im, paths, parts)
}

// newServerImage serves im (from paths, holding parts) as image "demo".
func newServerImage(t *testing.T, im *imager.Image, paths []string, parts [][]byte) *server {
	t.Helper()
	log := infoLogger(t)
	s := &server{im: im, parts: parts}
	var err error
	if s.store, err = pxe.OpenStore(filepath.Join(t.TempDir(), "pxeswarm.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.store.Close() })
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s.key = key
	s.pubPath = writeKey(t, pub)

	trk, err := tracker.New(tracker.Config{Listen: "127.0.0.1:0", Interval: time.Second, PeerTTL: 3 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	trk.Publish(s.im.InfoHash, "demo")
	s.trk = trk
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.url = "http://" + ln.Addr().String()
	s.cat = demoCatalog(t, s.im)
	capCtx, stopCaps := context.WithCancel(context.Background())
	if s.caps, err = pxe.OpenCaptures(pxe.CaptureConfig{Dir: t.TempDir(), Catalog: s.cat, Trackers: []string{s.url + "/announce"}, Margin: 1, Ctx: capCtx}, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopCaps(); s.caps.Wait() })
	h, err := pxe.HTTPConfig{
		PublicURL:  s.url,
		Store:      s.store,
		Key:        key,
		Catalog:    s.cat,
		Captures:   s.caps,
		AdminToken: testAdminToken,
		Trackers:   []string{s.url + "/announce"},
		Seeders: func(name string) []string {
			s.mu.Lock()
			defer s.mu.Unlock()
			if a, ok := s.seeders[name]; ok {
				return []string{a}
			}
			return []string{s.seeder}
		},
		Tracker: trk.Handler(),
	}.HandlerWithLog(log)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: s.wrap(h)}}
	srv.Start()
	t.Cleanup(srv.Close)

	seed := imager.Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
	seed.Image, seed.Paths, seed.Mode, seed.Trackers = s.im, paths, imager.ModeSeed, []string{s.url + "/announce"}
	sess, err := seed.Join(context.Background(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	s.seeder = sess.ListenAddr()
	return s
}

// demoCatalog publishes im as "demo" (seeded by the test, not the server).
func demoCatalog(t *testing.T, im *imager.Image) *catalog.Catalog {
	t.Helper()
	cat := catalog.New(catalog.Config{}, nil)
	if err := cat.Put(&catalog.Image{Name: "demo", Image: im}); err != nil {
		t.Fatal(err)
	}
	return cat
}

func writeKey(t *testing.T, pub ed25519.PublicKey) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plan-key.pub")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(pub)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// wrap records reports (and their answers) and lets a test rewrite
// answers.
func (s *server) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep *protocol.Report
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/api/report/") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			rep = new(protocol.Report)
			if err := json.Unmarshal(body, rep); err != nil {
				rep = &protocol.Report{Phase: "unparsable: " + string(body)}
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		s.mu.Lock()
		tamper := s.tamper
		if rep != nil {
			s.reports = append(s.reports, *rep)
			s.status = append(s.status, rec.Code)
		}
		s.mu.Unlock()
		if tamper != nil {
			body = tamper(r.URL.Path, body)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

func (s *server) setTamper(f func(path string, body []byte) []byte) {
	s.mu.Lock()
	s.tamper = f
	s.mu.Unlock()
}

// phases returns the phases of the reports for task id, runs of the same
// phase collapsed.
func (s *server) phases(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.reports {
		if r.TaskID != id {
			continue
		}
		if len(out) == 0 || out[len(out)-1] != r.Phase {
			out = append(out, r.Phase)
		}
	}
	return out
}

func (s *server) addTask(t *testing.T, set pxe.TaskSettings) pxe.Task {
	t.Helper()
	task, err := s.store.AddTask(pxe.Task{MAC: testMAC, Image: "demo", TaskSettings: set})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func (s *server) state(t *testing.T, id string) pxe.Task {
	t.Helper()
	task, err := s.store.Task(id)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// run is one agent run with its hooks' calls.
type run struct {
	cfg     Config
	console *testlog.Buffer
	shells  []string
	reboots []int
	halts   int
	cold    int
	err     error
}

// agentConfig returns a Config against s with the disks of disks, DHCP
// skipped, and hooks that record instead of rebooting, halting or
// starting a shell. Without a verified plan it halts after an error (the
// real default, retry, is tested on its own), with short retry waits.
func agentConfig(t *testing.T, s *server, disks partition.Config, cmdline string) *run {
	t.Helper()
	r := &run{console: &testlog.Buffer{}}
	cl := filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(cl, []byte(cmdline+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.cfg = Config{
		ServerURL: s.url,
		MAC:       testMAC,
		KeyPath:   s.pubPath,
		Cmdline:   cl,
		Coldplug: func(ctx context.Context, log *slog.Logger) ([]string, error) {
			r.cold++
			return []string{"virtio_net", "virtio_blk"}, nil
		},
		Disks:         disks,
		StartShell:    func(ctx context.Context, path string) error { r.shells = append(r.shells, path); return nil },
		Reboot:        func(cmd int) error { r.reboots = append(r.reboots, cmd); return nil },
		Halt:          func() { r.halts++ },
		OnError:       protocol.OnErrorHalt,
		RetryWait:     20 * time.Millisecond,
		RetryMaxWait:  80 * time.Millisecond,
		Console:       r.console,
		Listen:        "127.0.0.1:0",
		ReportEvery:   100 * time.Millisecond,
		ProgressEvery: 100 * time.Millisecond,
		DiskTimeout:   time.Second,
		PlanTries:     2,
	}
	return r
}

func (r *run) run(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	r.err = r.cfg.Run(ctx, infoLogger(t))
	t.Logf("Run took %v; console:\n%s", time.Since(start).Round(time.Millisecond), r.console)
	return r.err
}

// wantMarkers checks that the console has lines starting with each
// marker, in this order.
func (r *run) wantMarkers(t *testing.T, markers ...string) {
	t.Helper()
	lines := strings.Split(r.console.String(), "\n")
	i := 0
	for _, m := range markers {
		for i < len(lines) && !strings.HasPrefix(lines[i], m) {
			i++
		}
		if i == len(lines) {
			t.Errorf("console has no line starting %q after the markers before it", m)
			return
		}
		i++
	}
}

func (r *run) line(prefix string) string {
	for _, l := range strings.Split(r.console.String(), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func wholeSum(parts [][]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkDisk reads the disk's GPT and each partition's bytes.
func checkDisk(t *testing.T, path string, size int64, parts [][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := partition.ReadTable(f, size, 512)
	if err != nil {
		t.Fatalf("ReadTable(%s) after the agent: %v", path, err)
	}
	if tab.Kind != "gpt" || len(tab.Partitions) != len(parts) {
		t.Fatalf("ReadTable(%s) = %s with %d partitions, want gpt with %d", path, tab.Kind, len(tab.Partitions), len(parts))
	}
	for i, p := range tab.Partitions {
		got := make([]byte, len(parts[i]))
		if _, err := f.ReadAt(got, p.Start); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, parts[i]) {
			t.Errorf("partition %d of %s (at %d) differs from image part %d", p.Number, path, p.Start, i+1)
		}
	}
	if tab.Partitions[0].Label != "ESP" || tab.Partitions[1].Label != "root" {
		t.Errorf("partition names %q %q, want ESP root", tab.Partitions[0].Label, tab.Partitions[1].Label)
	}
}

// fakeMachine is a fake sysfs machine with one disk of size bytes that
// already holds an old GPT (so "untouched" means something).
func fakeMachine(t *testing.T, size int64) (partition.Config, string) {
	t.Helper()
	c := partitiontest.Machine(t)
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "vda", Size: size, Model: "QEMU HARDDISK", Serial: "SN-1",
		Layout: &imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: size / 2, Label: "old"}}}, KernelPartitions: true})
	disk := filepath.Join(c.Dev, "vda")
	// Some old data in the old partition.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte("old system "), 10000), 2*MiB)
	f.Close()
	return c, disk
}

// TestRunImagesDisk: the whole flow against a real server, tracker and
// seeder: the table is made, the image lands byte-identical, the read-back
// SHA-256 is the image's, reports move the task to done, and the agent
// reboots.
func TestRunImagesDisk(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", SeedFor: "1s", After: "reboot"})
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "console=ttyS0 pxeswarm.task="+task.ID)
	start := time.Now()
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	took := time.Since(start)
	sum := wholeSum(s.parts)
	r.wantMarkers(t,
		"pxeswarm: version ",
		"pxeswarm: coldplug 2 modules",
		"pxeswarm: lease ok server="+s.url+" from=config",
		"pxeswarm: plan ok task="+task.ID+" image=demo",
		"pxeswarm: disk "+disk+" 32MiB model=\"QEMU HARDDISK\" serial=SN-1 removable=no table=gpt",
		"pxeswarm: target "+disk+" (32MiB)",
		"pxeswarm: table gpt created on "+disk+" (2 partitions)",
		"pxeswarm: writing demo ("+bytesize.Format(s.im.Length)+") to "+disk,
		"pxeswarm: IMAGE DONE sha256="+sum+" infohash="+s.im.InfoHash.HexString(),
		"pxeswarm: seeding for 1s",
		"pxeswarm: rebooting",
	)
	if strings.Contains(r.console.String(), MarkError) {
		t.Errorf("console has an ERROR line")
	}
	if !slices.Equal(r.reboots, []int{RebootRestart}) || len(r.shells) != 0 || r.cold != 1 {
		t.Errorf("hooks: reboots %v shells %v coldplug %d, want one restart, no shell, one coldplug", r.reboots, r.shells, r.cold)
	}
	if took < time.Second {
		t.Errorf("Run took %v, want at least the plan's 1s of seeding", took)
	}
	checkDisk(t, disk, 32*MiB, s.parts)

	got := s.state(t, task.ID)
	if got.State != protocol.TaskDone || got.LastReport == nil || got.LastReport.Phase != protocol.PhaseDone ||
		!strings.Contains(got.LastReport.Message, "sha256="+sum) {
		t.Errorf("task after Run = %s, last report %+v; want done with the digest", got.State, got.LastReport)
	}
	ph := s.phases(task.ID)
	wantOrder := []string{protocol.PhaseBooting, protocol.PhaseDisk, protocol.PhaseImaging, protocol.PhaseVerifying, protocol.PhaseSeeding, protocol.PhaseDone}
	if !isSubsequence(wantOrder, ph) || ph[len(ph)-1] != protocol.PhaseDone {
		t.Errorf("report phases for %s = %v, want %v in order, ending in done", task.ID, ph, wantOrder)
	}
	s.mu.Lock()
	for i, code := range s.status {
		if code != http.StatusOK {
			t.Errorf("report %d (%+v) answered %d", i, s.reports[i], code)
		}
	}
	n := len(s.reports)
	// The last report names where the image came from: all of it from
	// the server's seeder (the only peer), and the agent's peer port.
	last := s.reports[n-1]
	s.mu.Unlock()
	if len(last.Received) != 1 || last.Received[0].From != protocol.SourceServer || last.Received[0].Bytes < s.im.Length || last.PeerPort == 0 {
		t.Errorf("last report's received = %+v, peer port %d; want %d bytes from %q and a port", last.Received, last.PeerPort, s.im.Length, protocol.SourceServer)
	}
	if n < 7 {
		t.Errorf("server saw %d reports, want the phase changes and periodic ones", n)
	}
	// The server draws the same: an edge from the server into the machine.
	var graphs []pxe.SwarmGraph
	if resp, err := http.Get(s.url + "/api/swarm"); err != nil {
		t.Error(err)
	} else {
		json.NewDecoder(resp.Body).Decode(&graphs)
		resp.Body.Close()
	}
	if len(graphs) != 1 || len(graphs[0].Edges) != 1 || graphs[0].Edges[0].From != pxe.NodeServer || graphs[0].Edges[0].To != testMAC || graphs[0].Edges[0].Bytes < s.im.Length {
		t.Errorf("GET /api/swarm = %+v, want one edge of %d bytes from the server to %s", graphs, s.im.Length, testMAC)
	}
	m, err := s.store.Machine(testMAC)
	if err != nil || m.LastReport == nil || m.LastReport.Phase != protocol.PhaseDone {
		t.Errorf("machine %s: %v, last report %+v, want done", testMAC, err, m.LastReport)
	}
}

// isSubsequence reports whether want appears in got in order.
func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestRunVerifyExisting: a second task in verify mode on a disk that
// already holds the image (no new table) finds every piece present,
// downloads nothing, and powers off as the plan says.
func TestRunVerifyExisting(t *testing.T) {
	s := newServer(t)
	first := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "vda"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "")
	if err := r.run(t); err != nil {
		t.Fatalf("first Run = %v", err)
	}
	if st := s.state(t, first.ID).State; st != protocol.TaskDone {
		t.Fatalf("first task is %s, want done", st)
	}
	// The fake kernel still lists the old partition 1; a real kernel
	// re-read the table. Drop the stale entry so the partitions come from
	// the new table (addressed by offset on the disk image file).
	if err := os.RemoveAll(filepath.Join(disks.Sys, "block", "vda", "vda1")); err != nil {
		t.Fatal(err)
	}
	second := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "vda"}, CheckMode: "verify", After: "poweroff"})
	r2 := agentConfig(t, s, disks, "")
	if err := r2.run(t); err != nil {
		t.Fatalf("second Run = %v", err)
	}
	r2.wantMarkers(t, "pxeswarm: plan ok task="+second.ID, "pxeswarm: writing demo", "pxeswarm: IMAGE DONE sha256="+wholeSum(s.parts), "pxeswarm: powering off")
	if r2.line(MarkTable) != "" {
		t.Errorf("second run made a table: %q", r2.line(MarkTable))
	}
	if !slices.Equal(r2.reboots, []int{RebootPowerOff}) {
		t.Errorf("reboot hook calls %v, want one power-off", r2.reboots)
	}
	if st := s.state(t, second.ID).State; st != protocol.TaskDone {
		t.Errorf("second task is %s, want done", st)
	}
	if ph := s.phases(second.ID); !slices.Contains(ph, protocol.PhaseVerifying) {
		t.Errorf("second task's phases %v, want verifying among them", ph)
	}
	checkDisk(t, disk, 32*MiB, s.parts)
}

// refused runs the agent on a fresh fake disk and checks that it stopped
// with the ERROR marker (containing each of want), halted without a
// shell, with the disk untouched, without rebooting, and with the task
// failed.
func refused(t *testing.T, s *server, r *run, disk string, taskID string, want ...string) {
	t.Helper()
	before := fileSum(t, disk)
	err := r.run(t)
	if err == nil {
		t.Fatalf("Run = nil, want an error")
	}
	line := r.line(MarkError)
	if line == "" {
		t.Fatalf("console has no %q line", MarkError)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("ERROR line %q does not say %q", line, w)
		}
	}
	r.wantMarkers(t, MarkVersion, MarkError, MarkHalt)
	if len(r.shells) != 0 || len(r.reboots) != 0 || r.halts != 1 {
		t.Errorf("hooks: shells %v reboots %v halts %d, want one halt, no shell and no reboot", r.shells, r.reboots, r.halts)
	}
	if after := fileSum(t, disk); after != before {
		t.Errorf("disk %s changed (sha256 %x → %x), want it untouched", disk, before, after)
	}
	if r.line(MarkWriting) != "" || r.line(MarkTable) != "" {
		t.Errorf("console says it wrote: %q %q", r.line(MarkTable), r.line(MarkWriting))
	}
	if taskID != "" {
		if got := s.state(t, taskID); got.State != protocol.TaskFailed || !strings.Contains(got.Error, want[0]) {
			t.Errorf("task %s = %s %q, want failed with the agent's error", taskID, got.State, got.Error)
		}
	}
}

// TestRunRefusesBadPlan: a plan changed on the way, an unsigned plan and
// a plan signed by another key all leave the disk untouched.
func TestRunRefusesBadPlan(t *testing.T) {
	const msg, todo = "the plan is not signed by this server's key", "rebuild the initramfs with the server's plan-key.pub"
	changePlan := func(f func(sp *protocol.SignedPlan)) func(string, []byte) []byte {
		return func(path string, body []byte) []byte {
			if !strings.HasPrefix(path, "/plan/") {
				return body
			}
			var sp protocol.SignedPlan
			if err := json.Unmarshal(body, &sp); err != nil {
				panic(err)
			}
			f(&sp)
			out, _ := json.Marshal(sp)
			return out
		}
	}
	for _, tc := range []struct {
		name   string
		tamper func(string, []byte) []byte
		badKey bool
	}{
		{"changed target", changePlan(func(sp *protocol.SignedPlan) {
			sp.Plan = bytes.Replace(sp.Plan, []byte(`"disk":"first"`), []byte(`"disk":"vdb"`), 1)
		}), false},
		{"unsigned", changePlan(func(sp *protocol.SignedPlan) { sp.Signature = "" }), false},
		{"other key", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
			s.setTamper(tc.tamper)
			disks, disk := fakeMachine(t, 32*MiB)
			r := agentConfig(t, s, disks, "pxeswarm.task="+task.ID)
			if tc.badKey {
				pub, _, _ := ed25519.GenerateKey(nil)
				r.cfg.KeyPath = writeKey(t, pub)
			}
			// Without a verified plan the agent has no report token: it
			// cannot fail the task (nor could anyone else), only tell the
			// machine record why it stopped.
			refused(t, s, r, disk, "", msg, todo)
			if !errors.Is(r.err, protocol.ErrBadSignature) {
				t.Errorf("Run = %v, want protocol.ErrBadSignature", r.err)
			}
			if got := s.state(t, task.ID); got.State != protocol.TaskPending {
				t.Errorf("task %s = %s, want it left pending by an agent without the plan's token", task.ID, got.State)
			}
			if m, err := s.store.Machine(testMAC); err != nil || m.LastReport == nil || !strings.Contains(m.LastReport.Error, msg) {
				t.Errorf("machine record = %+v, %v, want its last report to carry the agent's error", m, err)
			}
		})
	}
}

// TestRunRefusesSmallDisk: a disk smaller than the image is left alone.
func TestRunRefusesSmallDisk(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	disks, disk := fakeMachine(t, 6*MiB)
	r := agentConfig(t, s, disks, "pxeswarm.task="+task.ID)
	refused(t, s, r, disk, task.ID, "no disk to write the image to", "larger disk")
	if !errors.Is(r.err, partition.ErrTooSmall) {
		t.Errorf("Run = %v, want partition.ErrTooSmall", r.err)
	}
	r.wantMarkers(t, MarkPlan, "pxeswarm: disk "+disk+" 6MiB", MarkError)
}

// TestRunRefusesOtherTorrent: the server (or something on the way) hands
// out a torrent other than the one the signed plan pins.
func TestRunRefusesOtherTorrent(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	other, _, _ := testImage(t, "demo", 2)
	var buf bytes.Buffer
	if err := other.Write(&buf); err != nil {
		t.Fatal(err)
	}
	s.setTamper(func(path string, body []byte) []byte {
		if strings.HasPrefix(path, "/torrents/") {
			return buf.Bytes()
		}
		return body
	})
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "pxeswarm.task="+task.ID)
	refused(t, s, r, disk, task.ID, "info-hash "+other.InfoHash.HexString(), s.im.InfoHash.HexString(), "nothing was written")
	if !errors.Is(r.err, ErrInfoHashMismatch) {
		t.Errorf("Run = %v, want ErrInfoHashMismatch", r.err)
	}
}

// TestRunNoTask: a machine without a task stops before any disk work.
func TestRunNoTask(t *testing.T) {
	s := newServer(t)
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "")
	refused(t, s, r, disk, "", "the server has no task for "+testMAC, "create a task")
	if !errors.Is(r.err, ErrNoPlan) {
		t.Errorf("Run = %v, want ErrNoPlan", r.err)
	}
}

// TestRunServerDown: an unreachable server is a network failure: the
// ERROR line, then the dump of links, addresses and routes.
func TestRunServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	s := &server{url: dead, pubPath: writeKey(t, make(ed25519.PublicKey, ed25519.PublicKeySize))}
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "")
	r.cfg.PlanTries = 2
	refused(t, s, r, disk, "", "cannot fetch the plan from "+dead, "check that pxeswarm serve runs")
	r.wantMarkers(t, MarkError, MarkNet+" link 1 lo", MarkHalt)
	if c := r.console.String(); !strings.Contains(c, MarkNet+" route ") && !strings.Contains(c, MarkNet+" no IPv4 routes") {
		t.Errorf("the network dump has no routes line")
	}
}

// TestRunTrackerDownUsesSeeders: every announce fails (a busy or
// restarting server), and anacrolix waits a minute after a failed
// announce; the agent still images at once from the image host's seeder,
// whose address the plan carries (Plan.Seeders).
func TestRunTrackerDownUsesSeeders(t *testing.T) {
	s := newServer(t)
	var announces atomic.Int32
	s.setTamper(func(path string, body []byte) []byte {
		if path == "/announce" {
			announces.Add(1)
			return []byte("d14:failure reason16:tracker is downe")
		}
		return body
	})
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "console=ttyS0 pxeswarm.task="+task.ID)
	// Well under anacrolix's minute between failed announces.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := r.cfg.Run(ctx, infoLogger(t))
	t.Logf("Run took %v; console:\n%s", time.Since(start).Round(time.Millisecond), r.console)
	if err != nil {
		t.Fatalf("Run with every announce failing = %v (announces: %d)", err, announces.Load())
	}
	r.wantMarkers(t, "pxeswarm: IMAGE DONE sha256="+wholeSum(s.parts))
	checkDisk(t, disk, 32*MiB, s.parts)
	if announces.Load() == 0 {
		t.Errorf("the agent never announced: the test did not exercise a failing tracker")
	}
}

// TestRunCanceledWhileImaging: an admin cancels the task while the agent
// downloads; the 409 on its next report stops it with the disk
// half-written, and it does not reboot.
func TestRunCanceledWhileImaging(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	// Slow the swarm down so the cancel lands mid-download: 256 KiB/s
	// for a 5 MiB image.
	disks, _ := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "")
	r.cfg.Tuning = imager.Tuning{DownloadLimit: 256 << 10}
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if got, _ := s.store.Task(task.ID); got.State == protocol.TaskImaging && got.LastReport != nil && got.LastReport.BytesDone > 0 {
				s.store.Transition(task.ID, protocol.TaskCanceled, "canceled by the test")
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	err := r.run(t)
	if !errors.Is(err, ErrTaskEnded) {
		t.Fatalf("Run = %v, want ErrTaskEnded", err)
	}
	r.wantMarkers(t, MarkWriting, MarkError, MarkHalt+" (on_error=halt from plan)")
	if l := r.line(MarkError); !strings.Contains(l, "half-written") || !strings.Contains(l, "canceled") {
		t.Errorf("ERROR line %q, want it to say the task was canceled and the disk is half-written", l)
	}
	if r.line(MarkImageDone) != "" || len(r.reboots) != 0 || len(r.shells) != 0 || r.halts != 1 {
		t.Errorf("IMAGE DONE %q, reboots %v, shells %v, halts %d: want no IMAGE DONE, no reboot, no shell, one halt", r.line(MarkImageDone), r.reboots, r.shells, r.halts)
	}
	if st := s.state(t, task.ID).State; st != protocol.TaskCanceled {
		t.Errorf("task is %s, want it to stay canceled", st)
	}
}

// infoLogger routes Info and above to t.Log (anacrolix is chatty at
// Debug).
func infoLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestRunForgedReportRefused: while the agent images, another host posts
// a "done" for its task (it knows the MAC and the task ID, both listed by
// the open API) without the task's report token, and once more as
// text/plain, as a web page could. Both are refused, the task is not done
// until the agent's own report, and the agent images to a verified finish.
func TestRunForgedReportRefused(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", SeedFor: "1s", After: "reboot"})
	disks, disk := fakeMachine(t, 32*MiB)
	forged := fmt.Sprintf(`{"task_id": %q, "phase": "done", "message": "infohash=%s"}`, task.ID, s.im.InfoHash.HexString())
	type attempt struct {
		code  int
		state protocol.TaskState
	}
	tries := make(chan []attempt, 1)
	var once sync.Once
	s.setTamper(func(path string, body []byte) []byte {
		var reply struct{ State protocol.TaskState }
		json.Unmarshal(body, &reply)
		if strings.HasPrefix(path, "/api/report/") && reply.State == protocol.TaskImaging {
			once.Do(func() {
				go func() {
					var out []attempt
					for _, ct := range []string{"application/json", "text/plain"} {
						resp, err := http.Post(s.url+"/api/report/"+testMAC, ct, strings.NewReader(forged))
						if err != nil {
							t.Errorf("forged report: %v", err)
							break
						}
						resp.Body.Close()
						out = append(out, attempt{resp.StatusCode, s.state(t, task.ID).State})
					}
					tries <- out
				}()
			})
		}
		return body
	})
	r := agentConfig(t, s, disks, "pxeswarm.task="+task.ID)
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	var got []attempt
	select {
	case got = <-tries:
	case <-time.After(10 * time.Second):
		t.Fatal("the forged reports were never sent: the agent made no imaging report")
	}
	want := []attempt{{http.StatusUnauthorized, protocol.TaskImaging}, {http.StatusUnsupportedMediaType, protocol.TaskImaging}}
	if len(got) != 2 || got[0].code != want[0].code || got[1].code != want[1].code || got[0].state == protocol.TaskDone || got[1].state == protocol.TaskDone {
		t.Errorf("forged done reports = %+v, want %+v (refused, the task not done)", got, want)
	}
	r.wantMarkers(t, MarkImageDone, MarkReboot)
	checkDisk(t, disk, 32*MiB, s.parts)
	final := s.state(t, task.ID)
	if final.State != protocol.TaskDone || final.LastReport == nil || !strings.Contains(final.LastReport.Message, "sha256="+wholeSum(s.parts)) {
		t.Errorf("task after Run = %s, last report %+v; want done by the agent's report with the digest", final.State, final.LastReport)
	}
}

// TestRunRefusesReplayedPlan: a rogue server answers with a plan this
// server really signed, but for an earlier request (another nonce). The
// agent refuses it and writes nothing.
func TestRunRefusesReplayedPlan(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "shell"})
	resp, err := http.Get(s.url + "/plan/" + testMAC + "?" + protocol.NonceParam + "=" + strings.Repeat("ab", 16))
	if err != nil {
		t.Fatal(err)
	}
	old, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("recording a plan: %d %s", resp.StatusCode, old)
	}
	s.setTamper(func(path string, body []byte) []byte {
		if strings.HasPrefix(path, "/plan/") {
			return old
		}
		return body
	})
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "pxeswarm.task="+task.ID)
	refused(t, s, r, disk, "", "the plan is a replay", "another DHCP or HTTP server")
	if !errors.Is(r.err, protocol.ErrReplay) {
		t.Errorf("Run = %v, want protocol.ErrReplay", r.err)
	}
	if got := s.state(t, task.ID); got.State != protocol.TaskPending {
		t.Errorf("task %s = %s after a refused replay, want pending", task.ID, got.State)
	}
}

// TestRunOnErrorPlan: once a plan verified, its on_error decides, over
// the agent's own fallback: "shell" stops at the shell, "halt" halts with
// no shell even where the fallback says shell.
func TestRunOnErrorPlan(t *testing.T) {
	for _, tc := range []struct {
		plan, fallback string
		shells, halts  int
		marker         string
	}{
		{protocol.OnErrorShell, protocol.OnErrorHalt, 1, 0, MarkShell},
		{protocol.OnErrorHalt, protocol.OnErrorShell, 0, 1, MarkHalt + " (on_error=halt from plan)"},
	} {
		t.Run(tc.plan, func(t *testing.T) {
			s := newServer(t)
			task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot", OnError: tc.plan})
			disks, _ := fakeMachine(t, 6*MiB) // too small: an error after the plan
			r := agentConfig(t, s, disks, "")
			r.cfg.OnError = tc.fallback
			if err := r.run(t); !errors.Is(err, partition.ErrTooSmall) {
				t.Fatalf("Run = %v, want partition.ErrTooSmall", err)
			}
			r.wantMarkers(t, MarkPlan, MarkError, tc.marker)
			if len(r.shells) != tc.shells || r.halts != tc.halts || len(r.reboots) != 0 || r.line(MarkRetry) != "" {
				t.Errorf("hooks: shells %v halts %d reboots %v, retry line %q; want %d shell(s), %d halt(s), no reboot, no retry",
					r.shells, r.halts, r.reboots, r.line(MarkRetry), tc.shells, tc.halts)
			}
			if st := s.state(t, task.ID).State; st != protocol.TaskFailed {
				t.Errorf("task is %s, want failed (the agent reports before it halts or shells)", st)
			}
		})
	}
}

// TestRunOnErrorDefault: without a verified plan (the server has no task
// for the machine) and with no fallback configured, the agent starts
// over again and again, waits longer each time, and never opens a shell,
// not even when the (network) kernel command line asks for one. Stopped
// while waiting, it halts.
func TestRunOnErrorDefault(t *testing.T) {
	s := newServer(t)
	disks, _ := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "pxeswarm.on_error=shell")
	r.cfg.OnError = ""
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	plans := 0
	s.setTamper(func(path string, body []byte) []byte {
		if strings.HasPrefix(path, "/plan/") {
			// A 404 ends an attempt at once: stop in the third.
			mu.Lock()
			if plans++; plans == 3 {
				cancel()
			}
			mu.Unlock()
		}
		return body
	})
	err := r.cfg.Run(ctx, infoLogger(t))
	t.Logf("console:\n%s", r.console)
	if err == nil {
		t.Errorf("Run = nil, want the last attempt's error")
	}
	if l := r.line(MarkError); !strings.Contains(l, "no task for "+testMAC) {
		t.Errorf("first ERROR line %q, want the server's missing task", l)
	}
	if len(r.shells) != 0 || r.halts != 1 || len(r.reboots) != 0 {
		t.Errorf("hooks: shells %v halts %d reboots %v, want no shell, one halt, no reboot", r.shells, r.halts, r.reboots)
	}
	r.wantMarkers(t, MarkVersion, MarkError, MarkRetry+" in 20ms (attempt 2; on_error=retry from default)",
		MarkVersion, MarkError, MarkRetry+" in 40ms (attempt 3", MarkVersion, MarkError, MarkHalt+" (on_error=retry from default)")
	if r.cold != 3 {
		t.Errorf("coldplug ran %d times, want once per attempt (3)", r.cold)
	}
}

// TestRunOnErrorRetry: the plan says retry; the first attempt fails (the
// torrent is not the one the plan pins) and reports the task failed; the
// admin starts a new task meanwhile, and the agent, starting over, images
// the disk and reboots, with no shell and no halt.
func TestRunOnErrorRetry(t *testing.T) {
	s := newServer(t)
	set := pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot", OnError: protocol.OnErrorRetry}
	first := s.addTask(t, set)
	other, _, _ := testImage(t, "demo", 2)
	var buf bytes.Buffer
	if err := other.Write(&buf); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	s.setTamper(func(path string, body []byte) []byte {
		if strings.HasPrefix(path, "/torrents/") {
			swapped := false
			once.Do(func() { swapped = true })
			if swapped {
				return buf.Bytes()
			}
		}
		return body
	})
	disks, disk := fakeMachine(t, 32*MiB)
	r := agentConfig(t, s, disks, "")
	r.cfg.OnError = protocol.OnErrorHalt // the plan's retry must win
	second := make(chan pxe.Task, 1)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if got, _ := s.store.Task(first.ID); got.State == protocol.TaskFailed {
				task, err := s.store.AddTask(pxe.Task{MAC: testMAC, Image: "demo", TaskSettings: set})
				if err != nil {
					t.Error(err)
				}
				second <- task
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(second)
	}()
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v, want the second attempt to succeed", err)
	}
	r.wantMarkers(t, MarkVersion, MarkPlan+" task="+first.ID, MarkError, MarkRetry+" in 20ms (attempt 2; on_error=retry from plan)",
		MarkVersion, MarkPlan, MarkWriting, MarkImageDone, MarkReboot)
	if len(r.shells) != 0 || r.halts != 0 || !slices.Equal(r.reboots, []int{RebootRestart}) {
		t.Errorf("hooks: shells %v halts %d reboots %v, want one restart only", r.shells, r.halts, r.reboots)
	}
	checkDisk(t, disk, 32*MiB, s.parts)
	task, ok := <-second
	if !ok {
		t.Fatal("the first task never failed")
	}
	if st := s.state(t, task.ID).State; st != protocol.TaskDone {
		t.Errorf("second task is %s, want done", st)
	}
	if st := s.state(t, first.ID).State; st != protocol.TaskFailed {
		t.Errorf("first task is %s, want failed", st)
	}
}

// TestRunDiskAfterColdplug: the target's driver loads only when
// coldplug runs again (a card that appears after its controller's
// coldplug round has gone quiet; mmc_block loads only when coldplug sees
// it). The
// agent, finding no disk it may write, runs coldplug again while it
// waits, and images the disk that then shows up.
func TestRunDiskAfterColdplug(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", SeedFor: "1s", After: "reboot"})
	disks := partitiontest.Machine(t)
	r := agentConfig(t, s, disks, "console=ttyS0 pxeswarm.task="+task.ID)
	r.cfg.DiskTimeout = 5 * time.Second
	r.cfg.Coldplug = func(ctx context.Context, log *slog.Logger) ([]string, error) {
		r.cold++
		if r.cold == 2 { // the second round finds the card's block driver
			partitiontest.AddDisk(t, disks, partitiontest.Disk{Name: "mmcblk0", Size: 32 * MiB, Model: "QEMU!", KernelPartitions: true})
			return []string{"mmc_block"}, nil
		}
		return nil, nil
	}
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	disk := filepath.Join(disks.Dev, "mmcblk0")
	r.wantMarkers(t, "pxeswarm: coldplug 0 modules", "pxeswarm: target "+disk+" (32MiB)", "pxeswarm: IMAGE DONE")
	if r.cold < 2 {
		t.Errorf("coldplug ran %d times, want again while waiting for a disk", r.cold)
	}
	checkDisk(t, disk, 32*MiB, s.parts)
}
