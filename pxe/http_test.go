package pxe

import (
	"bytes"
	"context"
	"crypto/ed25519"
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
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/tracker"
)

const (
	testToken  = "s3cret-admin-token"
	testPublic = "http://198.18.0.1:8080"
	macA       = "52:54:00:00:00:0a"
	macB       = "52:54:00:00:00:0b"
)

// fixture is a boot server over a real store, a real (small, two-part)
// image torrent with web seed data, and kernel/initramfs files.
type fixture struct {
	t         testing.TB
	store     *Store
	key       ed25519.PrivateKey
	pub       ed25519.PublicKey
	cfg       HTTPConfig
	h         http.Handler
	im        *imager.Image
	cat       *catalog.Catalog // publishes im as "demo", with web seed data
	kernel    []byte
	initramfs []byte
	parts     [][]byte // the image's data, per file
}

// sharedImage is built once per process: hashing is the slow part.
var sharedImage struct {
	once  sync.Once
	dir   string
	im    *imager.Image
	paths []string
	parts [][]byte
	err   error
}

func testImage(t testing.TB) (*imager.Image, []string, [][]byte) {
	t.Helper()
	si := &sharedImage
	si.once.Do(func() {
		si.dir, si.err = os.MkdirTemp("", "pxeswarm-http-test-")
		if si.err != nil {
			return
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i, n := range []int{3<<20 + 12345, 1<<20 + 7} {
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			p := filepath.Join(si.dir, fmt.Sprintf("part%d.img", i+1))
			if si.err = os.WriteFile(p, b, 0o644); si.err != nil {
				return
			}
			si.paths, si.parts = append(si.paths, p), append(si.parts, b)
		}
		si.im, si.err = imager.Create(context.Background(), slog.New(slog.DiscardHandler), imager.CreateConfig{
			Name: "demo", Sources: si.paths, Table: "gpt", PieceLength: imager.MinPieceLength})
	})
	if si.err != nil {
		t.Fatal(si.err)
	}
	return si.im, si.paths, si.parts
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedImage.dir != "" {
		os.RemoveAll(sharedImage.dir)
	}
	os.Exit(code)
}

func newFixture(t testing.TB, mod func(*HTTPConfig)) *fixture {
	t.Helper()
	f := &fixture{t: t, store: testStore(t)}
	var err error
	f.pub, f.key, err = ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f.kernel = bytes.Repeat([]byte("KERNEL0123456789"), 4096)
	f.initramfs = bytes.Repeat([]byte("initramfs-bytes!"), 1024)
	os.WriteFile(filepath.Join(dir, "vmlinuz"), f.kernel, 0o644)
	os.WriteFile(filepath.Join(dir, "initramfs"), f.initramfs, 0o644)
	var paths []string
	f.im, paths, f.parts = testImage(t)
	f.cat = testCatalog(t, f.store, f.im, paths)
	f.cfg = HTTPConfig{
		PublicURL:  testPublic,
		Store:      f.store,
		Key:        f.key,
		Kernel:     filepath.Join(dir, "vmlinuz"),
		Initramfs:  filepath.Join(dir, "initramfs"),
		Cmdline:    "console=ttyS0",
		Catalog:    f.cat,
		ImageDirs:  []string{filepath.Dir(paths[0])},
		Trackers:   []string{testPublic + "/announce"},
		Defaults:   PlanDefaults{SeedFor: "1m"},
		AdminToken: testToken,
	}
	if mod != nil {
		mod(&f.cfg)
	}
	f.h, err = f.cfg.HandlerWithLog(testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// testCatalog publishes im as "demo", its parts at paths (when given)
// served as a web seed, and refuses to remove an image a task in store
// uses.
func testCatalog(t testing.TB, store *Store, im *imager.Image, paths []string) *catalog.Catalog {
	t.Helper()
	log := slog.New(slog.DiscardHandler) // fuzz targets must not log through F
	if _, fuzz := t.(*testing.F); !fuzz {
		log = testlog.New(t)
	}
	cat := catalog.New(catalog.Config{Dir: t.TempDir(), WebSeed: true, InUse: store.ImageUsers}, log)
	if err := cat.Put(&catalog.Image{Name: "demo", Image: im, Source: paths, WebSeed: len(paths) > 0}); err != nil {
		t.Fatal(err)
	}
	return cat
}

// do sends one request to the handler. hdr holds header pairs.
func (f *fixture) do(method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

// token is task id's report token.
func (f *fixture) token(id string) string {
	f.t.Helper()
	tok, err := f.store.ReportToken(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// agent posts a report as the task's agent does: JSON, with the report
// token of the task the body names. IH in body becomes the image's
// info-hash (a done report names it).
func (f *fixture) agent(mac, body string) *httptest.ResponseRecorder {
	f.t.Helper()
	body = strings.ReplaceAll(body, "IH", f.im.InfoHash.HexString())
	var r protocol.Report
	json.Unmarshal([]byte(body), &r)
	hdr := []string{"Content-Type", "application/json"}
	if r.TaskID != "" {
		if tok, err := f.store.ReportToken(r.TaskID); err == nil {
			hdr = append(hdr, "Authorization", "Bearer "+tok)
		}
	}
	return f.do("POST", "/api/report/"+mac, body, hdr...)
}

func (f *fixture) admin(method, path, body string) *httptest.ResponseRecorder {
	f.t.Helper()
	return f.do(method, path, body, "Authorization", "Bearer "+testToken)
}

// addTask creates a task through the admin API and returns it.
func (f *fixture) addTask(body string) Task {
	f.t.Helper()
	w := f.admin("POST", "/api/tasks", body)
	if w.Code != http.StatusCreated {
		f.t.Fatalf("POST /api/tasks %s = %d %s, want 201", body, w.Code, w.Body)
	}
	var ct CreatedTasks
	if err := json.Unmarshal(w.Body.Bytes(), &ct); err != nil || len(ct.Tasks) != 1 {
		f.t.Fatalf("POST /api/tasks reply %s: %v", w.Body, err)
	}
	return ct.Tasks[0]
}

func (f *fixture) state(id string) protocol.TaskState {
	f.t.Helper()
	task, err := f.store.Task(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return task.State
}

// wantJSONError checks a JSON error reply with the code and a hint.
func wantJSONError(t testing.TB, what string, w *httptest.ResponseRecorder, code int, hint string) {
	t.Helper()
	var e apiError
	if w.Code != code {
		t.Errorf("%s = %d %s, want %d", what, w.Code, strings.TrimSpace(w.Body.String()), code)
		return
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Errorf("%s: reply %q is not a JSON error: %v", what, w.Body, err)
		return
	}
	if !strings.Contains(e.Error, hint) {
		t.Errorf("%s: error %q, want it to mention %q", what, e.Error, hint)
	}
}

func isAgentScript(s, mac string) bool {
	return strings.HasPrefix(s, "#!ipxe\n") &&
		strings.Contains(s, "\nkernel "+testPublic+"/boot/vmlinuz initrd=initramfs console=ttyS0 pxeswarm.server="+testPublic+" pxeswarm.mac="+mac+" ") &&
		strings.Contains(s, "\ninitrd --name initramfs "+testPublic+"/boot/initramfs\n") &&
		strings.HasSuffix(s, "\nboot\n")
}

func isLocalScript(s, mac string) bool {
	return strings.HasPrefix(s, "#!ipxe\necho pxeswarm: ") &&
		strings.Contains(s, " for "+mac+", booting local disk\n") && strings.HasSuffix(s, "\nexit 1\n") &&
		!strings.Contains(s, "kernel")
}

func TestBootScript(t *testing.T) {
	f := newFixture(t, nil)
	script := func(mac string) string {
		t.Helper()
		w := f.do("GET", "/boot/"+mac+".ipxe", "")
		if w.Code != http.StatusOK {
			t.Fatalf("GET /boot/%s.ipxe = %d %s", mac, w.Code, w.Body)
		}
		return w.Body.String()
	}
	// Unknown machine: local disk, and it stays unknown (a GET adds
	// nothing).
	if s := script("52-54-00-00-00-0A"); !isLocalScript(s, macA) || !strings.Contains(s, "no task") {
		t.Errorf("script for unknown machine =\n%s\nwant local disk", s)
	}
	if m, err := f.store.Machine(macA); !errors.Is(err, ErrNoMachine) {
		t.Errorf("after the script: Machine(%s) = %+v, %v, want ErrNoMachine", macA, m, err)
	}

	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	if w := f.do("HEAD", "/boot/"+macA+".ipxe", ""); w.Code != 200 || f.state(task.ID) != protocol.TaskPending {
		t.Errorf("HEAD script = %d, state %s, want 200 and still pending", w.Code, f.state(task.ID))
	}
	if s := script(macA); !isAgentScript(s, macA) || !strings.Contains(s, "pxeswarm.task="+task.ID) {
		t.Errorf("script for pending task =\n%s\nwant our kernel and initramfs", s)
	}
	if st := f.state(task.ID); st != protocol.TaskPending {
		t.Errorf("after the script: task state %s, want still pending (the agent's report moves it)", st)
	}
	// The agent's first report with the task's token: booting.
	if w := f.agent(macA, `{"task_id": "`+task.ID+`", "phase": "booting", "message": "plan verified"}`); w.Code != http.StatusOK || f.state(task.ID) != protocol.TaskBooting {
		t.Errorf("agent's booting report = %d %s, state %s, want 200 and booting", w.Code, w.Body, f.state(task.ID))
	}
	// A re-boot while booting, and while imaging, retries.
	if s := script(strings.ReplaceAll(macA, ":", "-")); !isAgentScript(s, macA) {
		t.Errorf("script for a booting task (hyphen MAC) =\n%s\nwant our kernel again", s)
	}
	if _, err := f.store.Transition(task.ID, protocol.TaskImaging, ""); err != nil {
		t.Fatal(err)
	}
	if s := script(macA); !isAgentScript(s, macA) || f.state(task.ID) != protocol.TaskImaging {
		t.Errorf("re-boot mid-imaging: script =\n%s\nstate %s, want our kernel and the state kept", s, f.state(task.ID))
	}
	// Another machine is unaffected.
	if s := script(macB); !isLocalScript(s, macB) {
		t.Errorf("script for a machine without a task =\n%s", s)
	}
	// After done, the next boot is the local disk.
	if w := f.agent(macA, `{"task_id": "`+task.ID+`", "phase": "done", "message": "infohash=IH"}`); w.Code != http.StatusOK {
		t.Fatalf("report done = %d %s", w.Code, w.Body)
	}
	if s := script(macA); !isLocalScript(s, macA) {
		t.Errorf("script after the task is done =\n%s\nwant local disk", s)
	}
	// Canceled: local disk too.
	task2 := f.addTask(`{"mac": "` + macB + `", "image": "demo"}`)
	if w := f.admin("POST", "/api/tasks/"+task2.ID+"/cancel", ""); w.Code != http.StatusOK {
		t.Fatalf("cancel = %d %s", w.Code, w.Body)
	}
	if s := script(macB); !isLocalScript(s, macB) {
		t.Errorf("script after cancel =\n%s\nwant local disk", s)
	}

	for _, bad := range []string{"zz:54:00:00:00:0a", "52:54:00:00:00", "nope", "52%3A54%3A00%3A00%3A00"} {
		wantJSONError(t, "GET /boot/"+bad+".ipxe", f.do("GET", "/boot/"+bad+".ipxe", ""), http.StatusBadRequest, "MAC")
	}
	wantJSONError(t, "GET /boot/pxelinux.0", f.do("GET", "/boot/pxelinux.0", ""), http.StatusNotFound, "want vmlinuz")
}

// cannedBackend answers the boot path from fields.
type cannedBackend struct {
	mu   sync.Mutex
	task Task
	has  bool
	err  error
}

func (b *cannedBackend) ActiveTask(mac string) (Task, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.task, b.has, b.err
}

func (b *cannedBackend) Report(mac string, r protocol.Report) (Task, error) { return b.task, nil }

func (b *cannedBackend) Task(id string) (Task, error) { return b.task, nil }

func (b *cannedBackend) ReportToken(id string) (string, error) { return strings.Repeat("c0", 24), nil }

// TestBackendSeam runs the boot path on a canned backend: the handler
// asks the Backend, not the store.
func TestBackendSeam(t *testing.T) {
	b := &cannedBackend{task: Task{ID: "c1", MAC: macA, Image: "demo", State: protocol.TaskPending}, has: true}
	f := newFixture(t, func(c *HTTPConfig) { c.Backend = b })
	w := f.do("GET", "/boot/"+macA+".ipxe", "")
	if !isAgentScript(w.Body.String(), macA) || !strings.Contains(w.Body.String(), "pxeswarm.task=c1") {
		t.Errorf("script from canned task =\n%s", w.Body)
	}
	// The plan comes from the backend's task, with the server's defaults.
	w = f.do("GET", planPath(macA), "")
	p, err := protocol.Verify(w.Body.Bytes(), f.pub, macA, testNonce)
	if err != nil || p.TaskID != "c1" || p.Target.Disk != "first" || p.SeedFor != "1m" || p.CheckMode != "fresh" {
		t.Errorf("plan from canned task = %+v, %v", p, err)
	}
	// A backend error never boots the agent: local disk.
	b.mu.Lock()
	b.err = errors.New("disk on fire")
	b.mu.Unlock()
	w = f.do("GET", "/boot/"+macA+".ipxe", "")
	if !isLocalScript(w.Body.String(), macA) {
		t.Errorf("script on backend error =\n%s\nwant local disk", w.Body)
	}
	wantJSONError(t, "plan on backend error", f.do("GET", planPath(macA), ""), http.StatusInternalServerError, "server log")
	// A task that ended: local disk.
	b.mu.Lock()
	b.err, b.task.State = nil, protocol.TaskDone
	b.mu.Unlock()
	if w := f.do("GET", "/boot/"+macA+".ipxe", ""); !isLocalScript(w.Body.String(), macA) {
		t.Errorf("script for a task that just ended =\n%s\nwant local disk", w.Body)
	}
}

func TestPlan(t *testing.T) {
	f := newFixture(t, nil)
	wantJSONError(t, "plan without a task", f.do("GET", planPath(macA), ""), http.StatusNotFound, "no active task")
	wantJSONError(t, "plan for a bad MAC", f.do("GET", "/plan/nope", ""), http.StatusBadRequest, "MAC")

	task := f.addTask(`{"mac": "` + macA + `", "image": "demo", "target": {"disk": "vda", "partition": 3}, "check": "verify", "create_table": true, "discard": true, "seed_for": "90s", "after": "poweroff", "on_error": "retry"}`)
	w := f.do("GET", planPath(strings.ToUpper(strings.ReplaceAll(macA, ":", "-"))), "")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /plan = %d %s", w.Code, w.Body)
	}
	got, err := protocol.Verify(w.Body.Bytes(), f.pub, macA, testNonce)
	if err != nil {
		t.Fatalf("Verify(served plan) = %v", err)
	}
	want := &protocol.Plan{
		MAC: macA, TaskID: task.ID, Action: protocol.ActionDeploy, Image: "demo", Torrent: testPublic + "/torrents/demo.torrent",
		InfoHash: f.im.InfoHash.HexString(), Trackers: []string{testPublic + "/announce"},
		Target: protocol.Target{Disk: "vda", Partition: 3}, CreateTable: true, Discard: true, CheckMode: "verify", SeedFor: "90s", After: "poweroff",
		OnError: protocol.OnErrorRetry, Nonce: testNonce, ReportToken: f.token(task.ID),
	}
	if d := cmp.Diff(want, got, cmpopts.IgnoreFields(protocol.Plan{}, "Issued")); d != "" {
		t.Errorf("served plan (-want +got):\n%s", d)
	}
	if time.Since(got.Issued) > time.Minute {
		t.Errorf("plan issued %v, want about now", got.Issued)
	}
	// The plan does not move the task (reports do).
	if st := f.state(task.ID); st != protocol.TaskPending {
		t.Errorf("after GET /plan: state %s, want pending", st)
	}
	// Tampering breaks the signature; another key does not verify.
	tampered := bytes.Replace(w.Body.Bytes(), []byte(`vda`), []byte(`sda`), 1)
	if bytes.Equal(tampered, w.Body.Bytes()) {
		t.Fatal("test bug: nothing tampered")
	}
	if _, err := protocol.Verify(tampered, f.pub, macA, testNonce); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("Verify(tampered plan) = %v, want ErrBadSignature", err)
	}
	otherPub, _, _ := ed25519.GenerateKey(nil)
	if _, err := protocol.Verify(w.Body.Bytes(), otherPub, macA, testNonce); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("Verify(plan, other key) = %v, want ErrBadSignature", err)
	}
	if _, err := protocol.Verify(w.Body.Bytes(), f.pub, macB, testNonce); !errors.Is(err, protocol.ErrBadPlan) {
		t.Errorf("Verify(plan, other MAC) = %v, want ErrBadPlan", err)
	}
	// The pinned info-hash is the torrent the server serves.
	tw := f.do("GET", "/torrents/demo.torrent", "")
	im, err := imager.Parse(tw.Body.Bytes())
	if err != nil || im.InfoHash.HexString() != got.InfoHash {
		t.Errorf("served torrent: %v, info-hash %v, want %s", err, im, got.InfoHash)
	}
}

// TestPlanImageGone removes an image while a task uses it: refused, then
// forced; the task's plan then answers "not published" and the torrent
// 404.
func TestPlanImageGone(t *testing.T) {
	f := newFixture(t, nil)
	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	wantJSONError(t, "DELETE an image a task uses", f.admin("DELETE", "/api/images/demo", ""), http.StatusConflict, task.ID)
	if w := f.do("GET", planPath(macA), ""); w.Code != http.StatusOK {
		t.Fatalf("plan after a refused removal = %d %s", w.Code, w.Body)
	}
	if w := f.admin("DELETE", "/api/images/demo?force=true", ""); w.Code != http.StatusOK {
		t.Fatalf("forced DELETE = %d %s", w.Code, w.Body)
	}
	wantJSONError(t, "plan for an unpublished image", f.do("GET", planPath(macA), ""), http.StatusConflict, "does not publish")
	wantJSONError(t, "torrent of a removed image", f.do("GET", "/torrents/demo.torrent", ""), http.StatusNotFound, "no image")
	wantJSONError(t, "web seed of a removed image", f.do("GET", "/images/demo/demo/"+f.im.Files[0].Path, ""), http.StatusNotFound, "no web seed")
	wantJSONError(t, "new task for a removed image", f.admin("POST", "/api/tasks", `{"mac": "`+macB+`", "image": "demo"}`), http.StatusBadRequest, "not published")
	if st := f.state(task.ID); st != protocol.TaskPending {
		t.Errorf("task after a forced removal: %s, want it left pending", st)
	}
}

func TestReportAPI(t *testing.T) {
	f := newFixture(t, nil)
	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	report := func(mac, body string) *httptest.ResponseRecorder {
		t.Helper()
		return f.agent(mac, body)
	}
	steps := []struct {
		body  string
		code  int
		state protocol.TaskState
	}{
		{`{"task_id": "ID", "phase": "booting", "message": "agent up"}`, 200, protocol.TaskBooting},
		{`{"task_id": "ID", "phase": "disk"}`, 200, protocol.TaskImaging},
		{`{"task_id": "ID", "phase": "imaging", "bytes_done": 100, "bytes_total": 1000, "rate_bps": 50, "peers": 4}`, 200, protocol.TaskImaging},
		{`{"task_id": "ID", "phase": "verifying", "bytes_done": 1000, "bytes_total": 1000}`, 200, protocol.TaskImaging},
		{`{"task_id": "ID", "phase": "seeding", "bytes_done": 1000, "bytes_total": 1000, "peers": 9}`, 200, protocol.TaskSeeding},
		{`{"task_id": "ID", "phase": "imaging"}`, 409, protocol.TaskSeeding},
		{`{"task_id": "ID", "phase": "done", "message": "sha256=00 infohash=IH"}`, 200, protocol.TaskDone},
		{`{"task_id": "ID", "phase": "done", "message": "infohash=IH"}`, 200, protocol.TaskDone},
	}
	for _, st := range steps {
		body := strings.ReplaceAll(st.body, "ID", task.ID)
		w := report(macA, body)
		if w.Code != st.code {
			t.Errorf("report %s = %d %s, want %d", body, w.Code, w.Body, st.code)
		}
		if got := f.state(task.ID); got != st.state {
			t.Errorf("after report %s: state %s, want %s", body, got, st.state)
		}
		var rr reportReply
		if st.code == 200 && (json.Unmarshal(w.Body.Bytes(), &rr) != nil || rr.State != st.state || rr.TaskID != task.ID) {
			t.Errorf("report %s reply %s, want state %s", body, w.Body, st.state)
		}
	}
	got, _ := f.store.Task(task.ID)
	if r := got.LastReport; r == nil || r.Phase != protocol.PhaseDone || r.From != "192.0.2.1" || r.At.IsZero() {
		t.Errorf("task's last report = %+v", r)
	}

	// Failed: the error is kept on the task; then progress is refused
	// with 409 and the state.
	task2 := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	if w := report(macA, `{"task_id": "`+task2.ID+`", "phase": "failed", "error": "target /dev/sda (1 GB) is smaller than image demo"}`); w.Code != 200 {
		t.Fatalf("report failed = %d %s", w.Code, w.Body)
	}
	got, _ = f.store.Task(task2.ID)
	if got.State != protocol.TaskFailed || !strings.Contains(got.Error, "smaller than image") {
		t.Errorf("after a failed report: task = %s %q", got.State, got.Error)
	}
	w := report(macA, `{"task_id": "`+task2.ID+`", "phase": "imaging"}`)
	wantJSONError(t, "progress on a failed task", w, http.StatusConflict, "cannot become")
	if !strings.Contains(w.Body.String(), `"state": "failed"`) {
		t.Errorf("409 reply %s does not carry the state", w.Body)
	}

	// Canceled: the agent learns it from the 409.
	task3 := f.addTask(`{"mac": "` + macB + `", "image": "demo"}`)
	f.admin("POST", "/api/tasks/"+task3.ID+"/cancel", "")
	w = report(macB, `{"task_id": "`+task3.ID+`", "phase": "imaging"}`)
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), `"state": "canceled"`) {
		t.Errorf("report on a canceled task = %d %s, want 409 with state canceled", w.Code, w.Body)
	}

	// A report without a task (agent has no plan) updates the machine only.
	if w := report(macB, `{"phase": "failed", "error": "no plan: server unreachable"}`); w.Code != 200 {
		t.Errorf("report without task = %d %s", w.Code, w.Body)
	}
	m, _ := f.store.Machine(macB)
	if m.LastReport == nil || m.LastReport.Error != "no plan: server unreachable" {
		t.Errorf("machine's last report = %+v", m.LastReport)
	}

	// Bad reports: 4xx with a JSON error, state unchanged.
	task4 := f.addTask(`{"mac": "` + macB + `", "image": "demo"}`)
	for _, tc := range []struct {
		name, mac, body string
		code            int
		hint            string
	}{
		{"wrong task id", macB, `{"task_id": "` + task.ID + `", "phase": "done"}`, 400, "not a task of"},
		{"unknown task id", macB, `{"task_id": "t424242", "phase": "done"}`, 400, "not a task of"},
		{"unknown field", macB, `{"task_id": "` + task4.ID + `", "phase": "done", "evil": 1}`, 400, "unknown field"},
		{"bad phase", macB, `{"task_id": "` + task4.ID + `", "phase": "partying"}`, 400, "phase"},
		{"negative bytes", macB, `{"task_id": "` + task4.ID + `", "phase": "imaging", "bytes_done": -1}`, 400, "negative"},
		{"done > total", macB, `{"task_id": "` + task4.ID + `", "phase": "imaging", "bytes_done": 5, "bytes_total": 4}`, 400, "more than"},
		{"wrong type", macB, `{"task_id": 7, "phase": "done"}`, 400, "JSON"},
		{"not JSON", macB, `phase=done`, 400, "JSON"},
		{"empty", macB, ``, 400, "empty body"},
		{"two objects", macB, `{"phase": "done"}{"phase": "done"}`, 400, "more data"},
		{"array", macB, `[1,2]`, 400, "JSON"},
		{"bad MAC", "01:02", `{"phase": "done"}`, 400, "MAC"},
		{"huge", macB, `{"task_id": "` + task4.ID + `", "phase": "done", "message": "` + strings.Repeat("x", 70<<10) + `"}`, 413, "larger than"},
		{"long message", macB, `{"task_id": "` + task4.ID + `", "phase": "done", "message": "` + strings.Repeat("x", protocol.MaxReportText+1) + `"}`, 400, "at most"},
	} {
		wantJSONError(t, tc.name, report(tc.mac, tc.body), tc.code, tc.hint)
	}
	if st := f.state(task4.ID); st != protocol.TaskPending {
		t.Errorf("after bad reports: state %s, want pending", st)
	}
	if st := f.state(task.ID); st != protocol.TaskDone {
		t.Errorf("after another machine's report naming it: task %s state %s, want done", task.ID, st)
	}
	// And the server still works.
	if w := report(macB, `{"task_id": "`+task4.ID+`", "phase": "booting"}`); w.Code != 200 || f.state(task4.ID) != protocol.TaskBooting {
		t.Errorf("good report after bad ones = %d %s", w.Code, w.Body)
	}
	// GET is not a report.
	if w := f.do("GET", "/api/report/"+macB, ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/report = %d, want 405", w.Code)
	}
}

func TestAdminAuth(t *testing.T) {
	body := `{"mac": "` + macA + `", "image": "demo"}`
	for _, tc := range []struct {
		name, configured, auth string
		code                   int
		hint                   string
	}{
		{"right token", testToken, "Bearer " + testToken, 201, ""},
		{"scheme in lower case", testToken, "bearer " + testToken, 201, ""},
		{"wrong token", testToken, "Bearer " + testToken + "x", 401, "admin token"},
		{"prefix of token", testToken, "Bearer " + testToken[:5], 401, "admin token"},
		{"missing", testToken, "", 401, "admin token"},
		{"basic auth", testToken, "Basic " + testToken, 401, "admin token"},
		{"empty configured", "", "Bearer ", 403, "set an admin token"},
		{"empty configured, some token", "", "Bearer " + testToken, 403, "set an admin token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *HTTPConfig) { c.AdminToken = tc.configured })
			var hdr []string
			if tc.auth != "" {
				hdr = []string{"Authorization", tc.auth}
			}
			for _, path := range []string{"/api/tasks", "/api/tasks/t1/cancel", "/api/tasks/t1/done"} {
				w := f.do("POST", path, body, hdr...)
				if tc.code == 201 {
					if path == "/api/tasks" && w.Code != 201 {
						t.Errorf("POST %s with %s = %d %s, want 201", path, tc.name, w.Code, w.Body)
					}
					continue
				}
				wantJSONError(t, "POST "+path+" with "+tc.name, w, tc.code, tc.hint)
				if tc.code == 401 && w.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
			}
			tasks, _ := f.store.Tasks()
			if tc.code != 201 && len(tasks) != 0 {
				t.Errorf("refused admin calls created %d tasks", len(tasks))
			}
		})
	}
}

func TestAdminTasks(t *testing.T) {
	f := newFixture(t, func(c *HTTPConfig) { c.Defaults.CreateTable, c.Defaults.Discard = true, true })
	for i, mac := range []string{"52:54:00:00:01:01", "52:54:00:00:01:02", "52:54:00:00:01:03"} {
		if err := f.store.PutMachine(Machine{MAC: mac, Name: fmt.Sprintf("pc%d", i+1), Group: "room1"}); err != nil {
			t.Fatal(err)
		}
	}
	f.store.PutMachine(Machine{MAC: "52:54:00:00:02:01", Group: "room2"})

	for _, tc := range []struct{ name, body, hint string }{
		{"neither mac nor group", `{"image": "demo"}`, "either mac"},
		{"both", `{"mac": "` + macA + `", "group": "room1", "image": "demo"}`, "either mac"},
		{"unknown image", `{"mac": "` + macA + `", "image": "win95"}`, "pick one of demo"},
		{"bad mac", `{"mac": "52:54", "image": "demo"}`, "MAC"},
		{"bad check", `{"mac": "` + macA + `", "image": "demo", "check": "maybe"}`, "fresh or verify"},
		{"bad after", `{"mac": "` + macA + `", "image": "demo", "after": "explode"}`, "reboot, poweroff or shell"},
		{"bad on_error", `{"mac": "` + macA + `", "image": "demo", "on_error": "reboot"}`, "halt, retry or shell"},
		{"bad seed_for", `{"mac": "` + macA + `", "image": "demo", "seed_for": "ten minutes"}`, "Go duration"},
		{"negative seed_for", `{"mac": "` + macA + `", "image": "demo", "seed_for": "-1m"}`, "Go duration"},
		{"two selectors", `{"mac": "` + macA + `", "image": "demo", "target": {"disk": "sda", "label": "root"}}`, "exactly one"},
		{"empty target", `{"mac": "` + macA + `", "image": "demo", "target": {"partition": 2}}`, "exactly one"},
		{"device path", `{"mac": "` + macA + `", "image": "demo", "target": {"disk": "/dev/../sda"}}`, "device name"},
		{"bad guid", `{"mac": "` + macA + `", "image": "demo", "target": {"guid": "xyz"}}`, "GUID"},
		{"empty group", `{"group": "room9", "image": "demo"}`, "no known machine"},
		{"unknown field", `{"mac": "` + macA + `", "image": "demo", "wipe_all": true}`, "unknown field"},
		{"not JSON", `mac=` + macA, "JSON"},
	} {
		wantJSONError(t, tc.name, f.admin("POST", "/api/tasks", tc.body), http.StatusBadRequest, tc.hint)
	}
	if tasks, _ := f.store.Tasks(); len(tasks) != 0 {
		t.Fatalf("invalid requests created %d tasks", len(tasks))
	}

	// A group: every machine in it, with defaults filled in.
	w := f.admin("POST", "/api/tasks", `{"group": "room1", "image": "demo", "target": {"label": "root"}}`)
	var ct CreatedTasks
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &ct) != nil || len(ct.Tasks) != 3 {
		t.Fatalf("POST group task = %d %s, want 3 tasks", w.Code, w.Body)
	}
	for _, task := range ct.Tasks {
		want := TaskSettings{Target: protocol.Target{Label: "root"}, CreateTable: true, Discard: true, CheckMode: "fresh", SeedFor: "1m", After: "reboot", OnError: protocol.OnErrorHalt}
		if d := cmp.Diff(want, task.TaskSettings); d != "" || task.State != protocol.TaskPending || task.Image != "demo" {
			t.Errorf("group task %s: state %s, settings (-want +got):\n%s", task.ID, task.State, d)
		}
	}
	// create_table: false overrides the default true; on_error the
	// default halt.
	task := f.addTask(`{"mac": "52:54:00:00:02:01", "image": "demo", "create_table": false, "discard": false, "on_error": "shell"}`)
	if task.CreateTable {
		t.Errorf("create_table false was ignored")
	}
	if task.Discard {
		t.Errorf("discard false was ignored")
	}
	if task.OnError != protocol.OnErrorShell {
		t.Errorf("task on_error = %q, want the request's shell", task.OnError)
	}
	// Again for the group: conflict names a task in the way; nothing made.
	w = f.admin("POST", "/api/tasks", `{"group": "room1", "image": "demo"}`)
	wantJSONError(t, "group again", w, http.StatusConflict, ct.Tasks[0].ID)
	if tasks, _ := f.store.Tasks(); len(tasks) != 4 {
		t.Errorf("after the conflict: %d tasks, want 4", len(tasks))
	}

	// Cancel and done.
	id := ct.Tasks[0].ID
	w = f.admin("POST", "/api/tasks/"+id+"/cancel", "")
	var got Task
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &got) != nil || got.State != protocol.TaskCanceled || !strings.Contains(got.Error, "admin") {
		t.Errorf("cancel = %d %s", w.Code, w.Body)
	}
	wantJSONError(t, "done after cancel", f.admin("POST", "/api/tasks/"+id+"/done", ""), http.StatusConflict, "cannot become")
	if w := f.admin("POST", "/api/tasks/"+ct.Tasks[1].ID+"/done", ""); w.Code != 200 || f.state(ct.Tasks[1].ID) != protocol.TaskDone {
		t.Errorf("done = %d %s", w.Code, w.Body)
	}
	wantJSONError(t, "cancel unknown", f.admin("POST", "/api/tasks/t999/cancel", ""), http.StatusNotFound, "no such task")

	// The read API shows it all.
	w = f.do("GET", "/api/tasks?state=active", "")
	var active []Task
	if json.Unmarshal(w.Body.Bytes(), &active) != nil || len(active) != 2 {
		t.Errorf("GET /api/tasks?state=active = %s, want 2 tasks", w.Body)
	}
	w = f.do("GET", "/api/tasks?mac=52-54-00-00-01-01", "")
	var one []Task
	if json.Unmarshal(w.Body.Bytes(), &one) != nil || len(one) != 1 || one[0].ID != id {
		t.Errorf("GET /api/tasks?mac= = %s, want task %s", w.Body, id)
	}
	wantJSONError(t, "tasks by bad state", f.do("GET", "/api/tasks?state=sleeping", ""), 400, "want active")
	w = f.do("GET", "/api/machines?group=room1", "")
	var ms []MachineStatus
	if json.Unmarshal(w.Body.Bytes(), &ms) != nil || len(ms) != 3 {
		t.Fatalf("GET /api/machines?group=room1 = %s", w.Body)
	}
	if ms[0].Name != "pc1" || ms[0].Task != nil || ms[2].Task == nil || ms[2].Task.ID != ct.Tasks[2].ID {
		t.Errorf("machines = %+v", ms)
	}
	w = f.do("GET", "/api/status", "")
	var st Status
	if json.Unmarshal(w.Body.Bytes(), &st) != nil || st.Machines != 4 || st.Active != 2 || st.Tasks[protocol.TaskCanceled] != 1 ||
		st.Tasks[protocol.TaskDone] != 1 || len(st.Images) != 1 || !st.Images[0].WebSeed || !st.AdminAPI {
		t.Errorf("GET /api/status = %s", w.Body)
	}
}

// TestImageAPI adds and removes images through the admin API: only with
// the token, only from the image folders (symbolic links resolved), only
// images whose torrent fits their sources; a refused add publishes
// nothing.
func TestImageAPI(t *testing.T) {
	_, paths, parts := testImage(t)
	imgs := t.TempDir()
	p2 := filepath.Join(imgs, "p2.img")
	if err := os.WriteFile(p2, parts[1], 0o644); err != nil {
		t.Fatal(err)
	}
	for link, to := range map[string]string{"alias.img": p2, "escape.img": paths[1], "passwd.img": "/etc/passwd"} {
		if err := os.Symlink(to, filepath.Join(imgs, link)); err != nil {
			t.Fatal(err)
		}
	}
	f := newFixture(t, func(c *HTTPConfig) { c.ImageDirs = []string{imgs} })
	twoParts := filepath.Join(imgs, "demo.torrent")
	if err := f.im.WriteFile(twoParts); err != nil {
		t.Fatal(err)
	}
	many := `"` + strings.Repeat(p2+`", "`, maxAddSources) + p2 + `"`
	for _, tc := range []struct {
		name, body string
		code       int
		hint       string
	}{
		{"unknown field", `{"name": "x", "source": ["` + p2 + `"], "sources": []}`, 400, "unknown field"},
		{"two objects", `{"source": ["` + p2 + `"]} {}`, 400, "more data"},
		{"empty", ``, 400, "empty body"},
		{"huge", `{"name": "` + strings.Repeat("x", 70<<10) + `"}`, 413, "larger than"},
		{"no source", `{"name": "x"}`, 400, "list the image's source"},
		{"too many sources", `{"torrent": "` + twoParts + `", "source": [` + many + `]}`, 400, "at most"},
		{"relative", `{"name": "x", "source": ["p2.img"]}`, 400, "absolute path"},
		{"outside", `{"name": "x", "source": ["/etc/passwd"]}`, 400, "not inside the server's image folders"},
		{"dot-dot", `{"name": "x", "source": ["` + imgs + `/../../etc/passwd"]}`, 400, "not inside"},
		{"link out", `{"name": "x", "source": ["` + filepath.Join(imgs, "escape.img") + `"]}`, 400, "not inside"},
		{"link to a secret", `{"name": "x", "source": ["` + filepath.Join(imgs, "passwd.img") + `"]}`, 400, "not inside"},
		{"missing", `{"name": "x", "source": ["` + filepath.Join(imgs, "none.img") + `"]}`, 400, "no such file"},
		{"the folder", `{"name": "x", "source": ["` + imgs + `"]}`, 400, "not inside"},
		{"torrent outside", `{"torrent": "/etc/hostname", "source": ["` + p2 + `"]}`, 400, "torrent \"/etc/hostname\" is not inside"},
		{"parts", `{"name": "x", "torrent": "` + twoParts + `", "source": ["` + p2 + `"]}`, 400, "the torrent has 2 parts but source lists 1"},
		{"bad name", `{"name": "a/b", "source": ["` + p2 + `"]}`, 400, "names may hold only"},
		{"taken name", `{"name": "demo", "source": ["` + p2 + `"]}`, 409, "called demo"},
	} {
		wantJSONError(t, "POST /api/images "+tc.name, f.admin("POST", "/api/images", tc.body), tc.code, tc.hint)
	}
	if w := f.do("GET", "/api/images", ""); !strings.Contains(w.Body.String(), `"demo"`) || strings.Count(w.Body.String(), `"name"`) != 1 {
		t.Fatalf("GET /api/images after refused adds = %s, want demo only", w.Body)
	}
	body := `{"name": "p2", "source": ["` + filepath.Join(imgs, "alias.img") + `"]}`
	wantJSONError(t, "POST /api/images without token", f.do("POST", "/api/images", body), 401, "admin token")
	wantJSONError(t, "PUT /api/images", f.admin("PUT", "/api/images", body), 405, "GET, POST")
	w := f.admin("POST", "/api/images", body)
	var st ImageStatus
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &st) != nil || st.Name != "p2" || st.Size != int64(len(parts[1])) || !st.WebSeed {
		t.Fatalf("POST /api/images = %d %s, want 201 for p2", w.Code, w.Body)
	}
	if got, _ := f.cat.Get("p2"); got == nil || got.Source[0] != p2 {
		t.Errorf("catalog's p2 = %+v, want its source resolved to %s", got, p2)
	}
	tw := f.do("GET", "/torrents/p2.torrent", "")
	if im, err := imager.Parse(tw.Body.Bytes()); err != nil || im.InfoHash.HexString() != st.InfoHash || len(im.Meta.UrlList) != 1 {
		t.Errorf("GET /torrents/p2.torrent = %d: %v %v, want its torrent with our web seed", tw.Code, err, im)
	}
	wantJSONError(t, "POST the same again", f.admin("POST", "/api/images", body), 409, "called p2")
	var list []ImageStatus
	if w := f.do("GET", "/api/images", ""); json.Unmarshal(w.Body.Bytes(), &list) != nil || len(list) != 2 || list[1].Name != "p2" {
		t.Errorf("GET /api/images = %s, want demo and p2", w.Body)
	}

	wantJSONError(t, "DELETE without token", f.do("DELETE", "/api/images/p2", ""), 401, "admin token")
	wantJSONError(t, "DELETE ?force=maybe", f.admin("DELETE", "/api/images/p2?force=maybe", ""), 400, "want true or false")
	wantJSONError(t, "DELETE unknown", f.admin("DELETE", "/api/images/nope", ""), 404, "not published")
	wantJSONError(t, "DELETE bad name", f.admin("DELETE", "/api/images/..hidden", ""), 404, "no image")
	if w := f.admin("DELETE", "/api/images/p2", ""); w.Code != http.StatusOK {
		t.Fatalf("DELETE /api/images/p2 = %d %s", w.Code, w.Body)
	}
	wantJSONError(t, "torrent after DELETE", f.do("GET", "/torrents/p2.torrent", ""), 404, "no image")
	wantJSONError(t, "DELETE again", f.admin("DELETE", "/api/images/p2", ""), 404, "not published")

	// Without image folders, the route is off.
	off := newFixture(t, func(c *HTTPConfig) { c.ImageDirs = nil })
	wantJSONError(t, "POST /api/images without image folders", off.admin("POST", "/api/images", body), 403, "http.image_dirs")
}

// TestBadInputKeepsServing throws junk at every route, then checks a
// normal round still works.
func TestBadInputKeepsServing(t *testing.T) {
	f := newFixture(t, nil)
	junk := []string{"", "{", "null", "[]", `{"a":1}`, "\x00\xff", strings.Repeat("[", 10000), `{"phase":"done"` + strings.Repeat(" ", 100<<10) + "}"}
	for _, path := range []string{"/api/report/" + macA, "/api/tasks", "/api/tasks/t1/cancel", "/plan/" + macA, "/boot/x.ipxe", "/nowhere", "/images/demo/../../etc/passwd"} {
		for _, body := range junk {
			for _, method := range []string{"GET", "POST"} {
				w := f.admin(method, path, body)
				if w.Code >= 500 {
					t.Errorf("%s %s with %q = %d %s", method, path, protocol.Clip(body, 20), w.Code, w.Body)
				}
			}
		}
	}
	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	if w := f.do("GET", "/boot/"+macA+".ipxe", ""); !isAgentScript(w.Body.String(), macA) {
		t.Errorf("script after junk = %s", w.Body)
	}
	if w := f.agent(macA, `{"task_id": "`+task.ID+`", "phase": "imaging"}`); w.Code != 200 {
		t.Errorf("report after junk = %d %s", w.Code, w.Body)
	}
}

// serve runs the handler config on a loopback listener until the test
// ends and returns its base URL.
func serve(t *testing.T, cfg HTTPConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(ctx, testlog.New(t), ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after cancel = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of cancel")
		}
	})
	return "http://" + ln.Addr().String()
}

// TestBootFilesRange fetches the kernel and initramfs over a real socket
// with curl, whole and by range.
func TestBootFilesRange(t *testing.T) {
	f := newFixture(t, nil)
	base := serve(t, f.cfg)
	get := func(path string, hdr ...string) (int, []byte, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, resp.Header
	}
	if code, b, _ := get("/boot/vmlinuz"); code != 200 || !bytes.Equal(b, f.kernel) {
		t.Errorf("GET /boot/vmlinuz = %d, %d bytes, want 200 and the kernel", code, len(b))
	}
	if code, b, _ := get("/boot/initramfs"); code != 200 || !bytes.Equal(b, f.initramfs) {
		t.Errorf("GET /boot/initramfs = %d, %d bytes", code, len(b))
	}
	code, b, h := get("/boot/vmlinuz", "Range", "bytes=1000-1999")
	if code != http.StatusPartialContent || !bytes.Equal(b, f.kernel[1000:2000]) || h.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(f.kernel)) {
		t.Errorf("GET /boot/vmlinuz Range 1000-1999 = %d, %d bytes, Content-Range %q", code, len(b), h.Get("Content-Range"))
	}
	if code, _, _ := get("/boot/vmlinuz", "Range", fmt.Sprintf("bytes=%d-", len(f.kernel)+5)); code != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("GET /boot/vmlinuz past the end = %d, want 416", code)
	}

	needs.Tool(t, "curl")
	out := filepath.Join(t.TempDir(), "part")
	res, err := exec.Command("curl", "-sS", "--fail", "-r", "65000-", "-o", out, base+"/boot/vmlinuz").CombinedOutput()
	if err != nil {
		t.Fatalf("curl -r 65000-: %v %s", err, res)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, f.kernel[65000:]) {
		t.Errorf("curl -r 65000- got %d bytes, want the kernel's last %d", len(got), len(f.kernel)-65000)
	}
	res, err = exec.Command("curl", "-sS", "--fail", base+"/boot/52-54-00-00-00-0a.ipxe").CombinedOutput()
	if err != nil || !isLocalScript(string(res), macA) {
		t.Errorf("curl script = %v %s", err, res)
	}

	// Without configured files: 404 with what to do.
	f2 := newFixture(t, func(c *HTTPConfig) { c.Kernel, c.Initramfs = "", "" })
	wantJSONError(t, "kernel not configured", f2.do("GET", "/boot/vmlinuz", ""), 404, "no kernel configured")
}

// serveLocal serves cfg on a loopback port until the test ends and
// returns its URL. The web seed URL must be where the server really
// listens, so PublicURL is set to it.
func serveLocal(t *testing.T, cfg HTTPConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.PublicURL = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(ctx, testlog.New(t), ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return cfg.PublicURL
}

// TestTorrentAndWebSeed serves the torrent (with our web seed added) and
// downloads the whole image with anacrolix through the web seed alone:
// no tracker, no peers.
func TestTorrentAndWebSeed(t *testing.T) {
	f := newFixture(t, nil)
	base := serveLocal(t, f.cfg)

	resp, err := http.Get(base + "/torrents/demo.torrent")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-bittorrent" {
		t.Fatalf("GET torrent = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	im, err := imager.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if im.InfoHash != f.im.InfoHash {
		t.Errorf("served torrent info-hash %s, want %s (url-list must not change it)", im.InfoHash.HexString(), f.im.InfoHash.HexString())
	}
	if d := cmp.Diff([]string{base + "/images/demo/"}, []string(im.Meta.UrlList)); d != "" {
		t.Errorf("url-list (-want +got):\n%s", d)
	}
	for _, p := range []string{"/torrents/nope.torrent", "/torrents/demo", "/images/demo/demo/nofile", "/images/nope/demo/x"} {
		if r, err := http.Get(base + p); err != nil || r.StatusCode != 404 {
			t.Errorf("GET %s = %v %v, want 404", p, r.Status, err)
		} else {
			r.Body.Close()
		}
	}

	// One ranged request by hand, as BEP 19 clients make them.
	req, _ := http.NewRequest("GET", base+"/images/demo/demo/"+im.Files[1].Path, nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(got, f.parts[1][100:200]) {
		t.Errorf("web seed Range 100-199 of file 2 = %d, %d bytes", resp.StatusCode, len(got))
	}

	// A real BitTorrent client fetches the image from the web seed only.
	dir := t.TempDir()
	targets := []string{filepath.Join(dir, "t1"), filepath.Join(dir, "t2")}
	icfg := imager.Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
	icfg.Image, icfg.Paths, icfg.Mode = im, targets, imager.ModeFresh
	sess, err := icfg.Join(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	start := time.Now()
	if err := sess.Wait(wctx); err != nil {
		t.Fatalf("download through the web seed: %v (progress %+v)", err, sess.Progress())
	}
	t.Logf("web seed download of %d bytes took %v", im.Length, time.Since(start).Round(time.Millisecond))
	sess.Close()
	for i, p := range targets {
		b, _ := os.ReadFile(p)
		if !bytes.Equal(b, f.parts[i]) {
			t.Errorf("target %d after web seed download: %d bytes, differs from the image", i+1, len(b))
		}
	}
}

// TestTrackerShared mounts a real tracker on the same port and reads the
// swarm statistics through the API.
func TestTrackerShared(t *testing.T) {
	trk, err := tracker.New(tracker.Config{Listen: "127.0.0.1:0", Interval: time.Second, PeerTTL: 3 * time.Second}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil)
	trk.Publish(f.im.InfoHash, "demo")
	f2 := newFixture(t, func(c *HTTPConfig) {
		c.Tracker = trk.Handler()
		c.Swarms = func() any { return trk.Stats() }
	})
	w := f2.do("GET", "/stats", "")
	var stats []tracker.SwarmStats
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &stats) != nil || len(stats) != 1 || stats[0].Name != "demo" {
		t.Errorf("GET /stats through the boot server = %d %s", w.Code, w.Body)
	}
	w = f2.do("GET", "/api/swarms", "")
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &stats) != nil || len(stats) != 1 || stats[0].InfoHash != f.im.InfoHash.HexString() {
		t.Errorf("GET /api/swarms = %d %s", w.Code, w.Body)
	}
	// An announce reaches the tracker (a bad one gets its bencoded
	// failure, not our JSON 404).
	w = f2.do("GET", "/announce?info_hash=short", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "failure reason") {
		t.Errorf("GET /announce = %d %s, want the tracker's failure reason", w.Code, w.Body)
	}
	// Without a tracker: 404s that say so.
	wantJSONError(t, "swarms without tracker", f.do("GET", "/api/swarms", ""), 404, "without a tracker")
	wantJSONError(t, "announce without tracker", f.do("GET", "/announce", ""), 404, "no such path")
}

func TestHTTPConfigErrors(t *testing.T) {
	f := newFixture(t, nil)
	im, paths, _ := testImage(t)
	for _, tc := range []struct {
		name string
		mod  func(*HTTPConfig)
		hint string
	}{
		{"no store", func(c *HTTPConfig) { c.Store = nil }, "OpenStore"},
		{"no key", func(c *HTTPConfig) { c.Key = nil }, "LoadOrCreateKey"},
		{"public URL with slash", func(c *HTTPConfig) { c.PublicURL += "/" }, "trailing slash"},
		{"public URL no scheme", func(c *HTTPConfig) { c.PublicURL = "198.18.0.1:8080" }, "PublicURL"},
		{"public URL injection", func(c *HTTPConfig) { c.PublicURL = "http://x/\nshell" }, "PublicURL"},
		{"cmdline newline", func(c *HTTPConfig) { c.Cmdline = "quiet\nshell" }, "line break"},
		{"kernel missing", func(c *HTTPConfig) { c.Kernel = "/nonexistent/vmlinuz" }, "Kernel"},
		{"bad defaults", func(c *HTTPConfig) { c.Defaults.After = "explode" }, "Defaults"},
		{"relative image folder", func(c *HTTPConfig) { c.ImageDirs = []string{"images"} }, "absolute"},
		{"bad tracker", func(c *HTTPConfig) { c.Trackers = []string{"::"} }, "announce URL"},
	} {
		cfg := f.cfg
		tc.mod(&cfg)
		_, err := cfg.Handler()
		if !errors.Is(err, ErrBadHTTPConfig) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("%s: Handler() = %v, want ErrBadHTTPConfig mentioning %q", tc.name, err, tc.hint)
		}
	}
	// A torrent loaded from a file is served byte for byte.
	tp := filepath.Join(t.TempDir(), "demo.torrent")
	if err := im.WriteFile(tp); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(catalog.Config{}, testlog.New(t))
	if _, err := cat.Add(context.Background(), catalog.Spec{Name: "demo", Torrent: tp, Source: paths}); err != nil {
		t.Fatal(err)
	}
	cfg := f.cfg
	cfg.Catalog = cat
	h, err := cfg.Handler()
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/torrents/demo.torrent", nil))
	if want, _ := os.ReadFile(tp); !bytes.Equal(w.Body.Bytes(), want) {
		t.Errorf("torrent from path: served %d bytes, want the file's %d", w.Body.Len(), len(want))
	}
}

// TestStartStop runs Start on a free port and stops it.
func TestStartStop(t *testing.T) {
	f := newFixture(t, nil)
	cfg := f.cfg
	if err := cfg.Start(context.Background(), testlog.New(t)); !errors.Is(err, ErrBadHTTPConfig) {
		t.Errorf("Start without Listen = %v, want ErrBadHTTPConfig", err)
	}
	cfg.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := cfg.Start(ctx, testlog.New(t)); err != nil {
		t.Errorf("Start until the context ends = %v, want nil", err)
	}
	// A taken port fails with a hint.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.Listen = ln.Addr().String()
	if err := cfg.Start(context.Background(), testlog.New(t)); err == nil || !strings.Contains(err.Error(), "free port") {
		t.Errorf("Start on a taken port = %v", err)
	}
}

// TestRestartKeepsTasks closes the store mid-task, opens it again under a
// new server, and the machine still boots the agent.
func TestRestartKeepsTasks(t *testing.T) {
	f := newFixture(t, nil)
	task := f.addTask(`{"mac": "` + macA + `", "image": "demo", "seed_for": "5m"}`)
	f.do("GET", "/boot/"+macA+".ipxe", "")
	f.agent(macA, `{"task_id": "`+task.ID+`", "phase": "imaging", "bytes_done": 7, "bytes_total": 9}`)
	path := f.store.Path()
	before, _ := f.store.Task(task.ID)
	f.store.Close()

	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after, err := s.Task(task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("task after restart (-before +after):\n%s", d)
	}
	cfg := f.cfg
	cfg.Store = s
	h, err := cfg.Handler()
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/boot/"+macA+".ipxe", nil))
	if !isAgentScript(w.Body.String(), macA) {
		t.Errorf("script after restart =\n%s", w.Body)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", planPath(macA), nil))
	if p, err := protocol.Verify(w.Body.Bytes(), f.pub, macA, testNonce); err != nil || p.TaskID != task.ID || p.SeedFor != "5m" {
		t.Errorf("plan after restart = %+v, %v", p, err)
	}
}

// testNonce is the agent's nonce in the tests' plan requests.
const testNonce = "0123456789abcdef0123456789abcdef"

// planPath is the plan request an agent makes for mac.
func planPath(mac string) string { return "/plan/" + mac + "?" + protocol.NonceParam + "=" + testNonce }

// TestReportNeedsToken: a report on a task must carry the task's report
// token (only its signed plan has it), be JSON, and a done must name the
// image's info-hash; a refused report changes neither the task nor the
// machine record. A plan request must carry the agent's nonce.
func TestReportNeedsToken(t *testing.T) {
	f := newFixture(t, nil)
	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	other := f.addTask(`{"mac": "` + macB + `", "image": "demo"}`)
	ih := f.im.InfoHash.HexString()
	done := `{"task_id": "` + task.ID + `", "phase": "done", "message": "infohash=` + ih + `"}`
	for _, tc := range []struct {
		name string
		hdr  []string
		body string
		code int
		hint string
	}{
		{"no token", []string{"Content-Type", "application/json"}, done, 401, "report token"},
		{"wrong token", []string{"Content-Type", "application/json", "Authorization", "Bearer " + strings.Repeat("ab", 24)}, done, 401, "report token"},
		{"another task's token", []string{"Content-Type", "application/json", "Authorization", "Bearer " + f.token(other.ID)}, done, 401, "report token"},
		{"the admin token", []string{"Content-Type", "application/json", "Authorization", "Bearer " + testToken}, done, 401, "report token"},
		{"text/plain, as a web page may send", []string{"Content-Type", "text/plain", "Authorization", "Bearer " + f.token(task.ID)}, done, 415, "application/json"},
		{"done without the info-hash", []string{"Content-Type", "application/json", "Authorization", "Bearer " + f.token(task.ID)},
			`{"task_id": "` + task.ID + `", "phase": "done"}`, 400, "infohash=" + ih},
		{"done with another info-hash", []string{"Content-Type", "application/json", "Authorization", "Bearer " + f.token(task.ID)},
			`{"task_id": "` + task.ID + `", "phase": "done", "message": "infohash=` + strings.Repeat("0", 40) + `"}`, 400, "infohash=" + ih},
	} {
		wantJSONError(t, tc.name, f.do("POST", "/api/report/"+macA, tc.body, tc.hdr...), tc.code, tc.hint)
		if st := f.state(task.ID); st != protocol.TaskPending {
			t.Errorf("%s: task state %s, want pending", tc.name, st)
		}
		if m, _ := f.store.Machine(macA); m.LastReport != nil {
			t.Errorf("%s: machine record took the refused report: %+v", tc.name, m.LastReport)
		}
	}
	if w := f.agent(macA, done); w.Code != http.StatusOK || f.state(task.ID) != protocol.TaskDone {
		t.Errorf("the agent's own done = %d %s, state %s; want 200 and done", w.Code, w.Body, f.state(task.ID))
	}
	wantJSONError(t, "plan without a nonce", f.do("GET", "/plan/"+macB, ""), http.StatusBadRequest, "nonce")
	wantJSONError(t, "plan with a short nonce", f.do("GET", "/plan/"+macB+"?nonce=abc", ""), http.StatusBadRequest, "nonce")
}

// TestMaxConns: one host holding idle connections gets at most MaxConns of
// them served; a request waits until one is freed, then is answered.
func TestMaxConns(t *testing.T) {
	f := newFixture(t, nil)
	cfg := f.cfg
	cfg.MaxConns = 2
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(ctx, testlog.New(t), ln) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	get := func(timeout time.Duration) error {
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://" + addr + "/api/status")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	time.Sleep(100 * time.Millisecond) // both idle connections accepted
	if err := get(500 * time.Millisecond); err == nil {
		t.Errorf("GET with 2 of 2 connections held = served, want it to wait")
	}
	idle[0].Close()
	if err := get(5 * time.Second); err != nil {
		t.Errorf("GET after one connection closed = %v, want it served", err)
	}
}
