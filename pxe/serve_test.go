package pxe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// logBuffer is a concurrency-safe log sink the test can search.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startSite runs s.Start until the test ends and waits for Ready.
func startSite(t *testing.T, s *Site) (*logBuffer, func()) {
	t.Helper()
	var logs logBuffer
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
	port := freeTCPPort(t)
	s := &Site{
		StateDir: state, Address: netip.MustParseAddr("127.0.0.1"),
		HTTP: SiteHTTP{Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Kernel: filepath.Join(boot, "vmlinuz"), Initramfs: filepath.Join(boot, "initramfs")},
		DHCP:   SiteDHCP{Mode: "off"},
		TFTP:   SiteTFTP{Listen: "off"},
		Seed:   SiteSeed{Port: freeTCPPort(t)},
		Plan:   SitePlan{Auto: "all", CreateTable: true, Check: "fresh", After: "poweroff"},
		Images: []SiteImage{{Source: []string{img}, PieceLength: 1 << 20}},
	}
	return s
}

// TestServeComposes starts the whole server on loopback: the torrent made
// from a raw image is cached across restarts, the admin token is made
// once and kept private, plan.auto gives a booting machine one task (and
// only one), its plan verifies with the exported key, and the tracker on
// the HTTP port knows the seeder.
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
	const mac = "52:54:00:aa:00:01"
	code, script := get("/boot/52-54-00-aa-00-01.ipxe")
	if code != 200 || !strings.Contains(string(script), "kernel ") {
		t.Fatalf("script for a new machine with plan.auto=all = %d %q, want a kernel line", code, script)
	}
	code, body := get(planPath(mac))
	if code != 200 {
		t.Fatalf("GET /plan = %d %s", code, body)
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
	if plan.Image != "lab" || len(plan.Trackers) != 1 || plan.Trackers[0] != base+"/announce" {
		t.Errorf("plan = %+v, want image lab tracked at %s/announce", plan, base)
	}
	// The automatic task carries the [plan] settings, booleans included.
	if !plan.CreateTable || plan.CheckMode != "fresh" || plan.After != "poweroff" || plan.SeedFor != "10m0s" {
		t.Errorf("auto task's plan = %+v, want create_table, fresh, poweroff, 10m0s from [plan]", plan)
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
	// Done: the next boot goes to the local disk, and auto does not start
	// a second task for the same image.
	req, _ := http.NewRequest("POST", base+"/api/tasks/"+plan.TaskID+"/done", nil)
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
		{"missing source", func(s *Site) { s.Images[0].Source = []string{filepath.Join(dir, "none.img")} }, "image[0].source"},
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
