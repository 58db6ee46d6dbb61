package pxe

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
)

// fuzzFixture is a fixture whose store skips fsync (fuzzing writes
// thousands of times a second; durability is tested elsewhere) and whose
// handler logs nowhere.
func fuzzFixture(f *testing.F) *fixture {
	fx := newFixture(f, nil)
	fx.store.db.NoSync = true
	fx.store.db.MaxBatchDelay = 0
	h, err := fx.cfg.HandlerWithLog(slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	fx.h = h
	return fx
}

// serveRaw sends a request whose path may be anything (httptest.NewRequest
// panics on a bad URL, so the path is set after).
func serveRaw(h http.Handler, method, path string, body []byte, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/", bytes.NewReader(body))
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, r.URL.RawQuery = path[:i], path[i+1:]
	}
	r.URL.Path = path
	r.URL.RawPath = ""
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// checkReply asserts what every answer must be: no 5xx, and JSON errors
// for 4xx.
func checkReply(t *testing.T, what string, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code >= 500 {
		t.Fatalf("%s = %d %s", what, w.Code, w.Body)
	}
	if w.Code >= 400 && w.Code != http.StatusMovedPermanently {
		var e apiError
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
			t.Fatalf("%s = %d with a body that is not a JSON error: %q", what, w.Code, w.Body)
		}
	}
}

// FuzzStatusAPI posts arbitrary agent reports (and MACs) to the real
// handler over a real store. "$TASK" in the body stands for the machine's
// current task ID, so the fuzzer reaches the state machine; a task that
// ended is replaced by a new one.
func FuzzStatusAPI(f *testing.F) {
	fx := fuzzFixture(f)
	for _, seed := range []string{
		`{"task_id": "$TASK", "phase": "booting"}`,
		`{"task_id": "$TASK", "phase": "imaging", "bytes_done": 100, "bytes_total": 1000, "rate_bps": 5, "peers": 3, "message": "ok"}`,
		`{"task_id": "$TASK", "phase": "seeding", "bytes_done": 1000, "bytes_total": 1000}`,
		`{"task_id": "$TASK", "phase": "done"}`,
		`{"task_id": "$TASK", "phase": "failed", "error": "disk too small"}`,
		`{"task_id": "t1", "phase": "disk"}`,
		`{"phase": "failed", "error": "no plan"}`,
		`{"task_id": "$TASK", "phase": "imaging", "bytes_done": 9223372036854775807, "bytes_total": -1}`,
		`{"task_id": "$TASK", "phase": "imaging", "peers": 1e400}`,
		`{"task_id": "$TASK", "phase": "verifying", "extra": null}`,
		`{"task_id": "$TASK", "phase": "imaging"} {}`,
		`{"phase": "booting", "inventory": {"system": {"vendor": "QEMU"}, "disks": [{"name": "vda", "size_bytes": 1, "bus": "virtio"}], "nics": [{"name": "eth0", "mac": "52:54:00:00:00:0a"}]}}`,
		`{"task_id": "$TASK", "phase": "booting", "inventory": {"cpu": {"model": "\u001b[2J", "cores": -1}, "firmware": "coreboot"}}`,
		`[]`, `null`, `"x"`, ``, `{`, "\xff\xfe",
	} {
		f.Add(macA, []byte(seed))
	}
	f.Add("52-54-00-00-00-0A", []byte(`{"task_id": "$TASK", "phase": "disk"}`))
	f.Add("../../plan", []byte(`{}`))
	f.Add("52:54:00:00:00:0a/../../api/tasks", []byte(`{}`))
	f.Fuzz(func(t *testing.T, mac string, body []byte) {
		task, ok, err := fx.store.ActiveTask(macA)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if task, err = fx.store.AddTask(Task{MAC: macA, Image: "demo"}); err != nil {
				t.Fatal(err)
			}
		}
		body = bytes.ReplaceAll(body, []byte("$TASK"), []byte(task.ID))
		w := serveRaw(fx.h, "POST", "/api/report/"+mac, body, "Content-Type", "application/json")
		checkReply(t, "POST /api/report/"+mac, w)
		// The boot path keeps answering with a script.
		if w := serveRaw(fx.h, "GET", "/boot/"+macA+".ipxe", nil); w.Code != 200 || !strings.HasPrefix(w.Body.String(), "#!ipxe\n") {
			t.Fatalf("script after report %q = %d %s", body, w.Code, w.Body)
		}
	})
}

// FuzzAdminAPI sends arbitrary admin requests with the right token to the
// real handler: route 0 posts a task request, 1 an image to publish
// (POST /api/images, sources in the fixture's image folder), 2 an image
// name to remove (DELETE /api/images/{name}). What it manages to create is
// undone again (tasks canceled, images removed, demo put back), so the
// next input can create it too.
func FuzzAdminAPI(f *testing.F) {
	fx := fuzzFixture(f)
	fx.store.PutMachine(Machine{MAC: macB, Group: "room1"})
	_, paths, _ := testImage(f)
	for _, seed := range []string{
		`{"mac": "52:54:00:00:00:0a", "image": "demo"}`,
		`{"group": "room1", "image": "demo", "target": {"label": "root"}, "check": "verify", "create_table": true, "seed_for": "10m", "after": "shell"}`,
		`{"mac": "52-54-00-00-00-0a", "image": "demo", "target": {"disk": "nvme0n1", "partition": 2}, "after": "poweroff"}`,
		`{"mac": "52:54:00:00:00:0a", "image": "demo", "target": {"guid": "0fc63daf-8483-4772-8e79-3d69d8477de4"}}`,
		`{"mac": "52:54:00:00:00:0a", "image": "demo", "seed_for": "-5s"}`,
		`{"mac": "52:54:00:00:00:0a", "image": "demo", "seed_for": "9999999999h"}`,
		`{"mac": "52:54:00:00:00:0a", "image": "../demo"}`,
		`{"group": "", "mac": "", "image": "demo"}`,
		`{"mac": "52:54:00:00:00:0a", "image": "demo", "target": {"disk": "first", "partition": -1}}`,
		`{"mac": "52:54:00:00:00:0a", "image": "demo", "create_table": "yes"}`,
		`{"mac": "52:54:00:00:00:0a", "image": "demo", "wake": true}`,
		`[]`, `null`, ``, `{"mac": 1}`,
	} {
		f.Add(uint8(0), []byte(seed))
	}
	for _, seed := range []string{
		`{"name": "p2", "source": ["` + paths[1] + `"]}`,
		`{"source": ["` + paths[0] + `"]}`,
		`{"name": "demo", "source": ["` + paths[1] + `"]}`,
		`{"name": "p2", "source": ["` + paths[0] + `", "` + paths[1] + `"]}`,
		`{"name": "p2", "torrent": "` + paths[0] + `", "source": ["` + paths[1] + `"]}`,
		`{"name": "p2", "source": ["` + filepath.Dir(paths[0]) + `/../../etc/passwd"]}`,
		`{"name": "p2", "source": ["/etc/passwd"]}`,
		`{"name": "../p2", "source": ["` + paths[1] + `"]}`,
		`{"name": "p2", "source": []}`, `{"name": "p2", "source": [""]}`, `{"source": "x"}`, `{"name": "p2", "extra": 1}`,
	} {
		f.Add(uint8(1), []byte(seed))
	}
	for _, name := range []string{"demo", "p2", "", "..", "a/b", "demo.torrent", "%2e%2e"} {
		f.Add(uint8(2), []byte(name))
	}
	auth := []string{"Authorization", "Bearer " + testToken}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		switch route % 3 {
		case 0:
			fuzzTask(t, fx, body)
		case 1:
			w := serveRaw(fx.h, "POST", "/api/images", body, auth...)
			checkReply(t, "POST /api/images", w)
			if w.Code != http.StatusCreated {
				return
			}
			var st ImageStatus
			if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
				t.Fatalf("201 reply %q: %v", w.Body, err)
			}
			// Published at once, and gone at once when removed.
			if tw := serveRaw(fx.h, "GET", "/torrents/"+st.Name+".torrent", nil); tw.Code != http.StatusOK {
				t.Fatalf("torrent of added image %q = %d %s", st.Name, tw.Code, tw.Body)
			}
			if dw := serveRaw(fx.h, "DELETE", "/api/images/"+st.Name, nil, auth...); dw.Code != http.StatusOK {
				t.Fatalf("DELETE added image %q = %d %s", st.Name, dw.Code, dw.Body)
			}
			if tw := serveRaw(fx.h, "GET", "/torrents/"+st.Name+".torrent", nil); tw.Code != http.StatusNotFound {
				t.Fatalf("torrent of removed image %q = %d", st.Name, tw.Code)
			}
		case 2:
			name := string(body)
			w := serveRaw(fx.h, "DELETE", "/api/images/"+name, nil, auth...)
			checkReply(t, "DELETE /api/images/"+name, w)
			if _, ok := fx.cat.Get(name); ok && w.Code == http.StatusOK {
				t.Fatalf("image %q still published after DELETE answered 200", name)
			}
			if _, ok := fx.cat.Get("demo"); !ok {
				if err := fx.cat.Put(&catalog.Image{Name: "demo", Image: fx.im, Source: paths, WebSeed: true}); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// fuzzTask posts one task request; a task it creates must make a plan
// that verifies, and is canceled again.
func fuzzTask(t *testing.T, fx *fixture, body []byte) {
	w := serveRaw(fx.h, "POST", "/api/tasks", body, "Authorization", "Bearer "+testToken)
	checkReply(t, "POST /api/tasks", w)
	if w.Code != http.StatusCreated {
		return
	}
	var ct CreatedTasks
	if err := json.Unmarshal(w.Body.Bytes(), &ct); err != nil || len(ct.Tasks) == 0 {
		t.Fatalf("201 reply %q: %v", w.Body, err)
	}
	for _, task := range ct.Tasks {
		// What was accepted must make a plan that verifies.
		pw := serveRaw(fx.h, "GET", planPath(task.MAC), nil)
		if _, err := protocol.Verify(pw.Body.Bytes(), fx.pub, task.MAC, testNonce); err != nil {
			t.Fatalf("task from %q: plan does not verify: %v (%d %s)", body, err, pw.Code, pw.Body)
		}
		cw := serveRaw(fx.h, "POST", "/api/tasks/"+task.ID+"/cancel", nil, "Authorization", "Bearer "+testToken)
		if cw.Code != http.StatusOK {
			t.Fatalf("cancel %s = %d %s", task.ID, cw.Code, cw.Body)
		}
	}
}

// FuzzGetRoutes: any GET path a LAN host sends (boot scripts, GRUB
// configs, plans,
// torrents, web seeds, kernel, the read APIs, and whatever else) answers
// without a server error, and changes nothing: no task is created, ended
// or moved to another state, and no machine record is added or changed.
func FuzzGetRoutes(f *testing.F) {
	fx := fuzzFixture(f)
	task := fx.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	machines, err := fx.store.Machines()
	if err != nil || len(machines) != 1 {
		f.Fatalf("fixture machines = %+v, %v; want the task's one", machines, err)
	}
	for _, p := range []string{
		"/boot/" + macA + ".ipxe", "/boot/vmlinuz", "/boot/initramfs", planPath(macA), "/plan/" + macA,
		"/boot/" + macB + ".ipxe", planPath(macB), "/boot/02-00-00-00-00-01.ipxe", planPath("02:00:00:00:00:01"),
		"/torrents/demo.torrent", "/images/demo/demo/" + fx.im.Files[0].Path, "/images/demo/../../etc/passwd",
		"/api/status", "/api/tasks", "/api/tasks?state=active", "/api/machines", "/api/swarms", "/api/swarm", "/api/swarm?image=demo", "/api/images",
		"/api/machines/" + macA, "/api/machines/" + macB, "/api/machines/x",
		"/announce?info_hash=%00", "/scrape", "/stats", "/", "/%2e%2e/", "/boot/" + strings.Repeat("a", 5000),
		"/grub/grub.cfg", "/grub/" + macA + ".cfg", "/grub/" + macB + ".cfg", "/grub/x86_64-efi/grub.cfg", "/grub/.cfg",
		"/boot/shimx64.efi", "/boot/grubx64.efi", "/boot/ipxe.efi",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		w := serveRaw(fx.h, "GET", path, nil)
		checkReply(t, "GET "+path, w)
		ts, err := fx.store.Tasks()
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != 1 || ts[0].ID != task.ID || ts[0].State != task.State || !ts[0].Updated.Equal(task.Updated) {
			t.Fatalf("after GET %s the tasks are %+v, want only %s, unchanged (%s)", path, ts, task.ID, task.State)
		}
		ms, err := fx.store.Machines()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(machines, ms); d != "" {
			t.Fatalf("GET %s changed the machine records (-before +after):\n%s", path, d)
		}
	})
}
