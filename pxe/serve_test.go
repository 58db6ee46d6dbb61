package pxe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/internal/testnet"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// startSite runs s.Start until the test ends and waits for Ready.
func startSite(t *testing.T, s *Site) (*testlog.Buffer, func()) {
	t.Helper()
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tWriter{t}), nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx, log) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start returned %v after cancel, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Start did not return within 20s of cancel")
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), Ready) {
		select {
		case err := <-done:
			t.Fatalf("Start returned before ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("not ready within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &logs, stop
}

// verifiedPlan fetches mac's plan from the site at base and verifies it
// with the public key the site exported to its state dir.
func verifiedPlan(t *testing.T, base, state, mac string) *protocol.Plan {
	t.Helper()
	resp, err := http.Get(base + planPath(mac))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /plan/%s = %d %s", mac, resp.StatusCode, body)
	}
	pubBytes, err := os.ReadFile(filepath.Join(state, "plan-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := protocol.ParsePublicKey(pubBytes)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := protocol.Verify(body, pub, mac, testNonce)
	if err != nil {
		t.Fatalf("plan does not verify with plan-key.pub: %v", err)
	}
	return plan
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// loopbackSite is a site on 127.0.0.1 with DHCP and TFTP off and one raw
// image of size bytes.
func loopbackSite(t *testing.T, state string, size int) *Site {
	t.Helper()
	img := filepath.Join(state, "..", "lab.img")
	if _, err := os.Stat(img); err != nil {
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(img, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	boot := filepath.Join(state, "..", "boot")
	os.MkdirAll(boot, 0o755)
	os.WriteFile(filepath.Join(boot, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(boot, "initramfs"), []byte("initramfs"), 0o644)
	port := testnet.FreePort(t)
	s := &Site{
		StateDir: state, Address: netip.MustParseAddr("127.0.0.1"),
		HTTP: SiteHTTP{Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Kernel: filepath.Join(boot, "vmlinuz"), Initramfs: filepath.Join(boot, "initramfs")},
		DHCP:   SiteDHCP{Mode: "off"},
		TFTP:   SiteTFTP{Listen: "off"},
		Seed:   SiteSeed{Port: testnet.FreePort(t)},
		Plan:   SitePlan{CreateTable: true, Discard: true, Check: "fresh", After: "poweroff"},
		Images: []SiteImage{{Source: []string{img}, PieceLength: 1 << 20}},
	}
	return s
}

// TestServeComposes starts the whole server on loopback: the torrent made
// from a raw image is cached across restarts, the admin token is made
// once and kept private, a task made through the admin API boots the
// machine with the [plan] settings, its plan verifies with the exported
// key, and the tracker on the HTTP port knows the seeder.
func TestServeComposes(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	s := loopbackSite(t, state, 3<<20)
	logs, stop := startSite(t, s)
	base := s.PublicURL
	if base != "http://"+s.HTTP.Listen {
		t.Errorf("PublicURL = %q, want http://%s", base, s.HTTP.Listen)
	}
	if !strings.Contains(logs.String(), "making torrent") {
		t.Error("first start did not make the torrent")
	}
	st, err := os.Stat(filepath.Join(state, "admin-token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token: %v, mode %v; want a 0600 file", err, st)
	}
	token, _ := os.ReadFile(filepath.Join(state, "admin-token"))

	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// The console is served, behind its login, and the ready line names it.
	if code, page := get("/room"); code != 200 || !strings.Contains(string(page), `data-test="login-form"`) {
		t.Errorf("GET /room (following the redirect) = %d, want the login page:\n%s", code, page)
	}
	if !strings.Contains(logs.String(), "console="+base+"/room") {
		t.Errorf("the ready line does not name the console %s/room", base)
	}
	const mac = "52:54:00:aa:00:01"
	req, _ := http.NewRequest("POST", base+"/api/tasks", strings.NewReader(`{"mac": "`+mac+`", "image": "lab"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/tasks: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	code, script := get("/boot/52-54-00-aa-00-01.ipxe")
	if code != 200 || !strings.Contains(string(script), "kernel ") {
		t.Fatalf("script for a machine with a task = %d %q, want a kernel line", code, script)
	}
	plan := verifiedPlan(t, base, state, mac)
	if plan.Image != "lab" || len(plan.Trackers) != 1 || plan.Trackers[0] != base+"/announce" {
		t.Errorf("plan = %+v, want image lab tracked at %s/announce", plan, base)
	}
	// The plan names the image's seeder, and it answers there.
	if want := fmt.Sprintf("127.0.0.1:%d", s.Seed.Port); !slices.Equal(plan.Seeders, []string{want}) {
		t.Errorf("plan seeders = %q, want [%s]", plan.Seeders, want)
	} else if c, err := net.DialTimeout("tcp", want, 5*time.Second); err != nil {
		t.Errorf("the plan's seeder %s: %v", want, err)
	} else {
		c.Close()
	}
	// The task carries the [plan] settings, booleans included.
	if !plan.CreateTable || !plan.Discard || plan.CheckMode != "fresh" || plan.After != "poweroff" || plan.SeedFor != "10m0s" {
		t.Errorf("task's plan = %+v, want create_table, discard, fresh, poweroff, 10m0s from [plan]", plan)
	}
	// The seeder announced itself to the tracker on the HTTP port.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, sw := get("/api/swarms")
		var swarms []struct {
			InfoHash string `json:"info_hash"`
			Seeders  int    `json:"seeders"`
		}
		json.Unmarshal(sw, &swarms)
		if len(swarms) == 1 && swarms[0].InfoHash == plan.InfoHash && swarms[0].Seeders == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/api/swarms never listed the seeder: %s", sw)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Done: the next boot goes to the local disk.
	req, _ = http.NewRequest("POST", base+"/api/tasks/"+plan.TaskID+"/done", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("mark done: %v %v", err, resp)
	}
	resp.Body.Close()
	if _, script := get("/boot/" + mac + ".ipxe"); !strings.Contains(string(script), "exit") || strings.Contains(string(script), "kernel ") {
		t.Errorf("script after done = %q, want the local disk", script)
	}
	stop()

	// Restart: same token, cached torrent, the task history kept.
	s2 := loopbackSite(t, state, 0)
	logs2, stop2 := startSite(t, s2)
	defer stop2()
	if !strings.Contains(logs2.String(), "torrent cached") {
		t.Error("restart hashed the image again, want the cached torrent")
	}
	token2, _ := os.ReadFile(filepath.Join(state, "admin-token"))
	if !bytes.Equal(token, token2) {
		t.Error("admin token changed across restart")
	}
	resp, err = http.Get(s2.PublicURL + "/api/tasks")
	if err != nil {
		t.Fatal(err)
	}
	var tasks []Task
	json.NewDecoder(resp.Body).Decode(&tasks)
	resp.Body.Close()
	if len(tasks) != 1 || tasks[0].State != protocol.TaskDone {
		t.Errorf("tasks after restart = %+v, want the one done task", tasks)
	}
}

func TestServeBadSite(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		edit func(s *Site)
		want string
	}{
		{"missing source", func(s *Site) { s.Images[0].Source = []string{filepath.Join(dir, "none.img")} }, "image[0]: bad image: source: stat " + filepath.Join(dir, "none.img")},
		{"unknown interface", func(s *Site) { s.Address = netip.Addr{}; s.Interface = "pxsnope0" }, `interface "pxsnope0"`},
		{"short token file", func(s *Site) {
			f := filepath.Join(dir, "tok")
			os.WriteFile(f, []byte("short\n"), 0o600)
			s.HTTP.AdminTokenFile = f
		}, "shorter than 16"},
		{"torrent parts mismatch", func(s *Site) {
			im := s.Images[0]
			made, err := imager.Create(context.Background(), slog.New(slog.DiscardHandler), imager.CreateConfig{Sources: []string{im.Source[0], im.Source[0]}, PieceLength: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "two.torrent")
			made.WriteFile(path)
			s.Images[0].Torrent = path
		}, "2 parts but source lists 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := loopbackSite(t, filepath.Join(dir, "state"), 1<<20)
			tt.edit(s)
			err := s.Start(context.Background(), slog.New(slog.DiscardHandler))
			if err == nil || !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start() = %v, want ErrBadConfig mentioning %q", err, tt.want)
			}
		})
	}
}

// TestServeRuntimeImage runs the server with one image, publishes a second
// through the admin API while it runs, and images a terminal's disk (a
// file) with it from the server's own seeder, found through the server's
// tracker: no web seed, no direct peers. Then the image is removed again:
// refused while its task is active, done once the task is canceled, after
// which its torrent is gone and the tracker refuses its swarm.
func TestServeRuntimeImage(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	s := loopbackSite(t, state, 1<<20)
	s.Plan.Auto = "none"
	images := filepath.Join(dir, "images")
	if err := os.Mkdir(images, 0o755); err != nil {
		t.Fatal(err)
	}
	s.HTTP.ImageDirs = []string{images}
	data := make([]byte, 3<<20+4321)
	rand.Read(data)
	room2 := filepath.Join(images, "room2.img")
	if err := os.WriteFile(room2, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// A torrent of the first image, paired below with room2's data.
	wrong, err := imager.Create(context.Background(), slog.New(slog.DiscardHandler), imager.CreateConfig{Name: "wrong", Sources: []string{s.Images[0].Source[0]}})
	if err != nil {
		t.Fatal(err)
	}
	wrongTorrent := filepath.Join(images, "wrong.torrent")
	if err := wrong.WriteFile(wrongTorrent); err != nil {
		t.Fatal(err)
	}
	logs, stop := startSite(t, s)
	defer stop()
	base := s.PublicURL
	tokenBytes, err := os.ReadFile(filepath.Join(state, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	call := func(method, path, body, token string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	published := func() []ImageStatus {
		t.Helper()
		_, b := call("GET", "/api/images", "", "")
		var list []ImageStatus
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatalf("GET /api/images = %s: %v", b, err)
		}
		return list
	}

	add := `{"name": "room2", "source": ["` + room2 + `"]}`
	if code, b := call("POST", "/api/images", add, ""); code != http.StatusUnauthorized {
		t.Errorf("POST /api/images without the token = %d %s, want 401", code, b)
	}
	if code, b := call("POST", "/api/images", `{"name": "room2", "torrent": "`+wrongTorrent+`", "source": ["`+room2+`"]}`, token); code != http.StatusBadRequest ||
		!strings.Contains(string(b), "is this the right source") {
		t.Errorf("POST /api/images with a torrent of other data = %d %s, want 400 saying the source does not fit", code, b)
	}
	if l := published(); len(l) != 1 || l[0].Name != "lab" {
		t.Fatalf("images after refused adds = %+v, want only lab", l)
	}
	code, b := call("POST", "/api/images", add, token)
	if code != http.StatusCreated {
		t.Fatalf("POST /api/images = %d %s, want 201", code, b)
	}
	var added ImageStatus
	if err := json.Unmarshal(b, &added); err != nil || added.Name != "room2" || added.Size != int64(len(data)) || added.Torrent != base+"/torrents/room2.torrent" {
		t.Fatalf("POST /api/images reply %s (%v), want room2 of %d bytes", b, err, len(data))
	}
	if l := published(); len(l) != 2 || l[1].Name != "room2" {
		t.Errorf("GET /api/images = %+v, want lab and room2", l)
	}
	// The runtime image seeds on the next port after the first image's.
	if want := fmt.Sprintf("seed: started\" service=seed image=room2 port=%d", s.Seed.Port+1); !strings.Contains(logs.String(), want) {
		t.Errorf("log has no %q", want)
	}

	const mac = "52:54:00:aa:00:02"
	code, b = call("POST", "/api/tasks", `{"mac": "`+mac+`", "image": "room2", "check": "fresh"}`, token)
	if code != http.StatusCreated {
		t.Fatalf("POST /api/tasks = %d %s", code, b)
	}
	var ct CreatedTasks
	if err := json.Unmarshal(b, &ct); err != nil || len(ct.Tasks) != 1 {
		t.Fatalf("POST /api/tasks reply %s: %v", b, err)
	}
	task := ct.Tasks[0]
	plan := verifiedPlan(t, base, state, mac)
	if plan.Image != "room2" || plan.InfoHash != added.InfoHash || plan.Torrent != added.Torrent || plan.TaskID != task.ID {
		t.Fatalf("plan = %+v, want task %s for room2 (%s)", plan, task.ID, added.InfoHash)
	}

	// The terminal's side: the torrent from the plan, peers only from the
	// plan's tracker.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	im, err := imager.LoadURL(ctx, nil, plan.Torrent)
	if err != nil {
		t.Fatal(err)
	}
	if im.InfoHash.HexString() != plan.InfoHash || len(im.Meta.UrlList) != 0 {
		t.Fatalf("torrent from %s: info-hash %s, url-list %v; want %s and no web seed", plan.Torrent, im.InfoHash.HexString(), im.Meta.UrlList, plan.InfoHash)
	}
	target := filepath.Join(dir, "terminal-disk.img")
	fetch := imager.Config{Image: im, Paths: []string{target}, Mode: imager.ModeFresh, Trackers: plan.Trackers, Listen: "127.0.0.1:0"}
	sess, err := fetch.Join(ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Wait(ctx); err != nil {
		sess.Close()
		t.Fatalf("download of room2 from the server's seeder: %v (progress %+v); did its seeder start and announce?", err, sess.Progress())
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("terminal's disk after the download: %d bytes (%v), want room2's %d bytes exactly", len(got), err, len(data))
	}

	// Removal: refused while the task is active.
	code, b = call("DELETE", "/api/images/room2", "", token)
	if code != http.StatusConflict || !strings.Contains(string(b), task.ID) || !strings.Contains(string(b), "cancel") {
		t.Errorf("DELETE while task %s is active = %d %s, want 409 naming it and what to do", task.ID, code, b)
	}
	if code, b := call("GET", "/torrents/room2.torrent", "", ""); code != http.StatusOK {
		t.Errorf("torrent after a refused DELETE = %d %s", code, b)
	}
	if code, b := call("POST", "/api/tasks/"+task.ID+"/cancel", "", token); code != http.StatusOK {
		t.Fatalf("cancel = %d %s", code, b)
	}
	if code, b := call("DELETE", "/api/images/room2", "", token); code != http.StatusOK {
		t.Fatalf("DELETE after cancel = %d %s, want 200", code, b)
	}
	if code, b := call("GET", "/torrents/room2.torrent", "", ""); code != http.StatusNotFound {
		t.Errorf("torrent of a removed image = %d %s, want 404", code, b)
	}
	var peerID [20]byte
	copy(peerID[:], "-PX0001-removedimage")
	q := url.Values{"info_hash": {string(im.InfoHash[:])}, "peer_id": {string(peerID[:])}, "port": {"6999"},
		"uploaded": {"0"}, "downloaded": {"0"}, "left": {"0"}, "compact": {"1"}}
	if code, b := call("GET", "/announce?"+q.Encode(), "", ""); code != http.StatusOK || !strings.Contains(string(b), "failure reason") || !strings.Contains(string(b), "not published") {
		t.Errorf("announce for the removed image = %d %q, want a not-published failure reason", code, b)
	}
	if l := published(); len(l) != 1 || l[0].Name != "lab" {
		t.Errorf("images after DELETE = %+v, want only lab", l)
	}
	if code, _ := call("GET", "/torrents/lab.torrent", "", ""); code != http.StatusOK {
		t.Errorf("the first image's torrent = %d, want it still served", code)
	}
}
