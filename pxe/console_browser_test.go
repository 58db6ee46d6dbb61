package pxe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/wake"
	"github.com/pxeswarm/pxeswarm/tracker"
)

// ScreenshotsEnv names a folder the browser test saves its screenshots
// to (default: the test's temporary folder).
const ScreenshotsEnv = "PXESWARM_SCREENSHOTS"

// TestConsoleBrowser drives the console in real headless Chromium: it
// logs in, watches three machines' progress bars move as fake agents
// report, starts a deploy for a group, cancels one machine's task,
// presses wake and sees the magic packet on the room's wire, retries the
// canceled task, adds and deletes a schedule, opens every page and checks
// its screenshot is not blank; then a page of another origin, with the
// session cookie in the browser, tries to cancel a task and fails, and
// after logout the console's own page can change nothing.
//
// The server runs in a network namespace (newConsoleRoom): Chromium and
// the fake agents reach it from this host's namespace through a veth, and
// its Wake-on-LAN goes out of the room's bridge there, where pc-03's
// interface captures the frames.
func TestConsoleBrowser(t *testing.T) {
	needs.Tool(t, "chromium")
	chromium, _ := exec.LookPath("chromium")
	pc03 := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x00, 0x03}
	site := newConsoleRoom(t, netip.MustParsePrefix("198.18.1.13/24"), pc03)
	wire := site.capture(t)
	// Where the server's magic packets go, as a site's [wake] section
	// would say: the limited broadcast out of the bridge (SO_BINDTODEVICE,
	// in the namespace) and the room's directed broadcast. Only request
	// handlers run in the namespace (consoleRoom.serve): keep Retries -1
	// and schedules from firing, or packets would be sent from goroutines
	// in this host's namespace, where 198.18.1.255 follows the default
	// route.
	wc := wake.Config{Interface: site.bridge, Addrs: []netip.Addr{netip.MustParseAddr("198.18.1.255")}, Port: wake.DefaultPort}
	f := newFixture(t, func(c *HTTPConfig) {
		w, err := NewWaker(t.Context(), WakeConfig{Send: wc, Retries: -1, Store: c.Store}, testlog.New(t))
		if err != nil {
			t.Fatal(err)
		}
		c.Wake = w
		c.Scheduler = NewScheduler(ScheduleConfig{Store: c.Store})
	})
	room := []Machine{
		{MAC: "52:54:00:12:00:01", Name: "pc-01", Group: "room-101", IP: "198.18.1.11", Arch: "bios"},
		{MAC: "52:54:00:12:00:02", Name: "pc-02", Group: "room-101", IP: "198.18.1.12", Arch: "efi-x86_64"},
		{MAC: "52:54:00:12:00:03", Name: "pc-03", Group: "room-102", IP: "198.18.1.13", Arch: "efi-x86_64"},
	}
	tasks := map[string]Task{}
	for _, m := range room {
		if err := f.store.PutMachine(m); err != nil {
			t.Fatal(err)
		}
		if err := f.store.SeeMachine(m.MAC, m.IP, m.Arch); err != nil {
			t.Fatal(err)
		}
		tasks[m.MAC] = f.addTask(`{"mac": "` + m.MAC + `", "image": "demo"}`)
	}
	// The swarm page's numbers: the tracker's per-host totals, canned.
	f.cfg.Swarms = func() any {
		return []tracker.SwarmStats{{Name: "demo", InfoHash: f.im.InfoHash.HexString(), Peers: 4, Seeders: 1, Hosts: []tracker.HostStats{
			{Addr: netip.MustParseAddr("198.18.1.1"), Uploaded: 300 << 20},
			{Addr: netip.MustParseAddr("198.18.1.11"), Downloaded: 400 << 20, Uploaded: 150 << 20},
			{Addr: netip.MustParseAddr("198.18.1.12"), Downloaded: 400 << 20, Uploaded: 250 << 20},
			{Addr: netip.MustParseAddr("198.18.1.13"), Downloaded: 400 << 20, Uploaded: 500 << 20},
		}}}
	}
	base := site.serve(t, f.cfg)
	reporting := fakeAgents(t, base, f, tasks)

	bctx, shots := headlessBrowser(t, chromium, 1280, 900)
	ctx, cancel := context.WithTimeout(bctx, 4*time.Minute)
	defer cancel()
	fail := func(what string, start time.Time, err error) {
		t.Helper()
		loc, _ := chromedp.Run(bctx, chromedp.Location())
		t.Fatalf("%s (at %s, after %v): %v", what, loc, time.Since(start).Round(time.Millisecond), err)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		start := time.Now()
		if err := chromedp.Do(ctx, actions...); err != nil {
			fail(what, start, err)
		}
	}
	// wait polls a JavaScript condition until it is true.
	wait := func(what, cond string) {
		t.Helper()
		start := time.Now()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			fail(what, start, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		start := time.Now()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			fail("text of "+sel, start, err)
		}
		return s
	}
	shot := func(name string) {
		t.Helper()
		start := time.Now()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			fail("screenshot "+name, start, err)
		}
		checkNotBlank(t, name, buf)
		if err := os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Not logged in: the room sends to the login page; a wrong token is
	// told so, the right one opens the room.
	run("open the room", chromedp.Navigate(base+"/room"), chromedp.WaitVisible(chromedp.CSS(`[data-test=login-secret]`)))
	shot("login")
	run("log in wrong", chromedp.SendKeys(chromedp.CSS(`[data-test=login-secret]`), "not-the-token-0000"), chromedp.Click(chromedp.CSS(`[data-test=login-submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=login-error]`)))
	run("log in", chromedp.SendKeys(chromedp.CSS(`[data-test=login-secret]`), testToken), chromedp.Click(chromedp.CSS(`[data-test=login-submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=room]`)))

	// Three machines, in two group sections, and their bars move.
	wait("three machines", `document.querySelectorAll('[data-test=machine-row]').length === 3 && document.querySelectorAll('[data-test=group]').length === 2`)
	pcts := `Object.fromEntries([...document.querySelectorAll('[data-test=machine-row]')].map(r => [r.dataset.mac, parseFloat(r.querySelector('[data-test=progress]').dataset.pct)]))`
	wait("some progress", `Object.values(`+pcts+`).every(p => p > 0)`)
	first, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](pcts))
	if err != nil {
		t.Fatalf("reading the progress bars: %v", err)
	}
	wait("progress moves", fmt.Sprintf(`(() => { const a = %s, b = %s; return Object.keys(a).every(k => b[k] > a[k] + 1); })()`, mustJSON(first), pcts))
	if phase := text(`tr[data-mac="52:54:00:12:00:01"] [data-test=phase]`); phase != "imaging" {
		t.Errorf("pc-01's phase cell = %q, want imaging", phase)
	}
	if fw := text(`tr[data-mac="52:54:00:12:00:02"] td:nth-child(5)`); fw != "efi-x86_64" {
		t.Errorf("pc-02's firmware cell = %q, want efi-x86_64", fw)
	}
	shot("room")
	reporting.stop()
	// The reports came through the uplink; the swarm page matches the
	// tracker's hosts to the machines' LAN addresses.
	for _, m := range room {
		if err := f.store.SeeMachine(m.MAC, m.IP, ""); err != nil {
			t.Fatal(err)
		}
	}

	// The first round is done; a deploy for room-101 from the tasks page
	// starts two new tasks.
	for _, task := range tasks {
		if w := f.admin("POST", "/api/tasks/"+task.ID+"/done", ""); w.Code != http.StatusOK {
			t.Fatalf("marking %s done = %d %s", task.ID, w.Code, w.Body)
		}
	}
	run("tasks page", chromedp.Navigate(base+"/tasks"), chromedp.WaitVisible(chromedp.CSS(`#tasks[data-loaded=true]`)),
		chromedp.SetValue(chromedp.CSS(`#deploy-scope`), "group"), chromedp.SetValue(chromedp.CSS(`#deploy-group`), "room-101"),
		chromedp.Click(chromedp.CSS(`[data-test=deploy-submit]`)))
	wait("two pending tasks", `document.querySelectorAll('[data-test=task-row][data-state=pending]').length === 2`)
	active := map[string]Task{}
	for _, m := range room {
		if task, ok, _ := f.store.ActiveTask(m.MAC); ok {
			active[m.MAC] = task
		}
	}
	if len(active) != 2 || active[room[0].MAC].ID == "" || active[room[1].MAC].ID == "" {
		t.Fatalf("after the group deploy, active tasks = %v, want pc-01's and pc-02's", active)
	}
	shot("tasks")

	// Cancel pc-01's task from the room; pc-02's stays.
	run("cancel pc-01", chromedp.Navigate(base+"/room"), chromedp.WaitVisible(chromedp.CSS(`tr[data-mac="52:54:00:12:00:01"][data-state=pending] [data-test=cancel]`)),
		chromedp.Click(chromedp.CSS(`tr[data-mac="52:54:00:12:00:01"] [data-test=cancel]`)))
	wait("pc-01 idle", `document.querySelector('tr[data-mac="52:54:00:12:00:01"]').dataset.state === 'idle'`)
	// pc-02's new task has no report yet: its bar starts empty, not at
	// the last task's progress.
	if p := text(`tr[data-mac="52:54:00:12:00:02"] .pct`); p != "0%" {
		t.Errorf("pc-02's new pending task shows %q, want 0%%", p)
	}
	if st := f.state(active[room[0].MAC].ID); st != protocol.TaskCanceled {
		t.Errorf("pc-01's task after Cancel = %s, want canceled", st)
	}
	if st := f.state(active[room[1].MAC].ID); st != protocol.TaskPending {
		t.Errorf("pc-02's task after canceling pc-01's = %s, want pending", st)
	}
	// Wake: the page posts the contract's body, says what happened, and
	// the magic packet for that machine, and no other, arrives on the
	// room's wire.
	if got := wire.udp(wc.Port); len(got) != 0 {
		t.Fatalf("%d frame(s) to UDP port %d on the room's wire before wake was pressed", len(got), wc.Port)
	}
	run("wake pc-03", chromedp.Click(chromedp.CSS(`tr[data-mac="52:54:00:12:00:03"] [data-test=wake]`)))
	wait("wake answered", fmt.Sprintf(`document.querySelector('[data-test=flash]').textContent.includes('Wake-on-LAN sent to %d address(es)')`, 1+len(wc.Addrs)))
	checkWakeFrames(t, wire, wc, site.bridgeMAC, pc03)
	shot("room-after")

	// Retry pc-01's canceled task from the tasks page: a new pending task
	// with the same image.
	run("retry pc-01", chromedp.Navigate(base+"/tasks"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-task="`+active[room[0].MAC].ID+`"] [data-test=retry-task]`)),
		chromedp.Click(chromedp.CSS(`tr[data-task="`+active[room[0].MAC].ID+`"] [data-test=retry-task]`)))
	wait("pc-01 pending again", `document.querySelectorAll('[data-test=task-row][data-mac="52:54:00:12:00:01"][data-state=pending]').length === 1`)
	if task, ok, _ := f.store.ActiveTask(room[0].MAC); !ok || task.State != protocol.TaskPending || task.Image != "demo" || task.ID == active[room[0].MAC].ID {
		t.Errorf("pc-01 after Retry: active task %+v (%v), want a new pending task for demo", task, ok)
	}

	// The other pages load and show what they should.
	run("machine page", chromedp.Navigate(base+"/machine/52:54:00:12:00:01"), chromedp.WaitReady(chromedp.CSS(`body[data-ready=true]`)))
	wait("history", `document.querySelectorAll('[data-test=history-row]').length === 3`)
	// The inventory the agent reported, its markup shown as text.
	wait("inventory", `document.querySelector('[data-test=inventory]').textContent.includes('virtio_net')`)
	inv := text(`[data-test=inventory]`)
	for _, want := range []string{"QEMU", "Standard PC (i440FX + PIIX, 1996)", "2 cores", "2.0 GiB", "8.0 GiB", "<img src=x onerror=", "1000 Mb/s", "disabled"} {
		if !strings.Contains(inv, want) {
			t.Errorf("inventory on the machine page lacks %q:\n%s", want, inv)
		}
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#inventory img').length`)); err != nil || n != 0 {
		t.Errorf("the inventory's markup became %d element(s) (%v), want none", n, err)
	}
	shot("machine")
	run("images page", chromedp.Navigate(base+"/images"), chromedp.WaitVisible(chromedp.CSS(`[data-test=image-row][data-name=demo]`)))
	shot("images")
	run("swarm page", chromedp.Navigate(base+"/swarm"), chromedp.WaitReady(chromedp.CSS(`#swarms[data-loaded=true]`)))
	wait("swarm hosts", `document.querySelectorAll('[data-test=swarm-host]').length === 4`)
	wait("swarm hosts named", `document.querySelector('#swarms').textContent.includes('pc-03')`)
	if sum := text(`[data-test=swarm][data-name=demo] p`); !strings.Contains(sum, "got 1.2 GiB: 900.0 MiB from each other, about 300.0 MiB from the server") {
		t.Errorf("swarm summary = %q, want 1.2 GiB got, 900 MiB from peers, 300 MiB from the server", sum)
	}
	shot("swarm")
	run("schedules page", chromedp.Navigate(base+"/schedules"), chromedp.WaitReady(chromedp.CSS(`#schedules[data-loaded=true]`)),
		chromedp.WaitReady(chromedp.CSS(`body[data-ready=true]`)))
	shot("schedules")

	// A schedule from the page: wake room-102 and deploy demo once, the
	// day after tomorrow at 22:00 in the browser's time zone (Berlin,
	// UTC+1 in winter, UTC+2 in summer). The page turns the local time
	// into an instant; the store must hold that instant.
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("time zone: %v", err)
	}
	day := time.Now().In(berlin).AddDate(0, 0, 2)
	at := time.Date(day.Year(), day.Month(), day.Day(), 22, 0, 0, 0, berlin)
	if sc := f.schedules(); len(sc) != 0 {
		t.Fatalf("schedules before the page added one: %+v", sc)
	}
	if _, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Europe/Berlin"}); err != nil {
		t.Fatalf("setting the browser's time zone: %v", err)
	}
	run("add a schedule", chromedp.Reload(), chromedp.WaitReady(chromedp.CSS(`body[data-ready=true]`)),
		chromedp.SendKeys(chromedp.CSS(`[data-test=schedule-name]`), "wake room-102"),
		chromedp.SetValue(chromedp.CSS(`[data-test=schedule-at]`), at.Format("2006-01-02T15:04")),
		chromedp.SetValue(chromedp.CSS(`[data-test=schedule-group]`), "room-102"),
		chromedp.SetValue(chromedp.CSS(`[data-test=schedule-image]`), "demo"),
		chromedp.Click(chromedp.CSS(`[data-test=schedule-submit]`)))
	wait("schedule listed", `document.querySelectorAll('[data-test=schedule-row]').length === 1 && /added/.test(document.querySelector('[data-test=flash]').textContent)`)
	stored := f.schedules()
	if len(stored) != 1 {
		t.Fatalf("after adding from the page, the API lists %d schedules, want 1: %+v", len(stored), stored)
	}
	sc := stored[0]
	if sc.Name != "wake room-102" || sc.Group != "room-102" || sc.Image != "demo" || !sc.Wake || !sc.At.Equal(at) || !sc.Next.Equal(at) || sc.Weekly != "" || len(sc.MACs) != 0 {
		t.Errorf("the page's schedule is stored as %+v, want name %q, group room-102, image demo, wake, once at %v", sc, "wake room-102", at.UTC())
	}
	if byID, err := f.store.Schedules(); err != nil || len(byID) != 1 || byID[0].ID != sc.ID {
		t.Errorf("store's schedules = %+v (%v), want the API's %s", byID, err, sc.ID)
	}
	row := `tr[data-test=schedule-row][data-id="` + sc.ID + `"]`
	if id := text(row + ` td:nth-child(1)`); id != sc.ID {
		t.Errorf("the listed schedule's ID cell = %q, want %q", id, sc.ID)
	}
	if what := text(row + ` td:nth-child(4)`); !strings.Contains(what, "group room-102") || !strings.Contains(what, "wake") || !strings.Contains(what, "deploy demo") {
		t.Errorf("the listed schedule's What = %q, want group room-102, wake and deploy demo", what)
	}
	shot("schedules-added")
	run("delete the schedule", chromedp.Click(chromedp.CSS(row+` [data-test=cancel-schedule]`)))
	wait("schedule gone", `document.querySelectorAll('[data-test=schedule-row]').length === 0 && /Canceled schedule/.test(document.querySelector('[data-test=flash]').textContent)`)
	if sc := f.schedules(); len(sc) != 0 {
		t.Errorf("after deleting from the page, the API lists %+v, want none", sc)
	}
	if sc, err := f.store.Schedules(); err != nil || len(sc) != 0 {
		t.Errorf("after deleting from the page, the store holds %+v (%v), want none", sc, err)
	}

	// A page on another origin (same site for cookies: the server's
	// address on another port, so the SameSite cookie is sent) tries to cancel
	// pc-02's task with a fetch and a form post. Both reach the server
	// with the cookie and are refused: no CSRF token, foreign Origin.
	target := base + "/api/tasks/" + active[room[1].MAC].ID + "/cancel"
	evil := evilSite(t, site.listen(t), target)
	run("evil page", chromedp.Navigate(evil), chromedp.WaitReady(chromedp.CSS(`body[data-done=true]`)))
	evilStatus := text(`#status`)
	time.Sleep(300 * time.Millisecond) // the form post's navigation
	if st := f.state(active[room[1].MAC].ID); st != protocol.TaskPending {
		t.Errorf("pc-02's task after a cross-site cancel = %s, want pending (refused)", st)
	}
	t.Logf("evil page: %s", evilStatus)

	// Logout; then the console's own page has no session: a POST from it
	// is refused.
	run("logout", chromedp.Navigate(base+"/tasks"), chromedp.WaitVisible(chromedp.CSS(`[data-test=logout]`)), chromedp.Click(chromedp.CSS(`[data-test=logout]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=login-secret]`)))
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`fetch(%q, {method: 'POST', headers: {'X-CSRF-Token': 'x'}}).then(r => r.status)`,
		"/api/tasks/"+active[room[1].MAC].ID+"/cancel"), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("POST from the page after logout: %v", err)
	}
	if status != http.StatusUnauthorized {
		t.Errorf("POST from the console page after logout = %d, want 401", status)
	}
	if st := f.state(active[room[1].MAC].ID); st != protocol.TaskPending {
		t.Errorf("pc-02's task after a POST without a session = %s, want pending", st)
	}
	t.Logf("screenshots in %s", shots)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// checkNotBlank fails the test if a screenshot is not a PNG or has fewer
// than 16 distinct colours (a blank or error page has one or two).
func checkNotBlank(t *testing.T, name string, b []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	colors := map[[4]uint32]bool{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			cr, cg, cb, ca := img.At(x, y).RGBA()
			colors[[4]uint32{cr, cg, cb, ca}] = true
		}
	}
	if len(colors) < 16 {
		t.Errorf("screenshot %s has %d distinct colours: blank?", name, len(colors))
	}
}

// consoleInventory is what the fake agents report they found. The disk
// model is markup: the console must show it as text.
const consoleInventory = `{"system": {"vendor": "QEMU", "product": "Standard PC (i440FX + PIIX, 1996)", "serial": "S-0001"},
 "cpu": {"model": "QEMU Virtual CPU version 2.5+", "cores": 2, "threads": 2}, "memory_bytes": 2147483648,
 "disks": [{"name": "vda", "model": "<img src=x onerror=document.title='pwned'>", "size_bytes": 8589934592, "bus": "virtio"}],
 "nics": [{"name": "eth0", "driver": "virtio_net", "mac": "52:54:00:12:00:01", "speed_mbps": 1000}],
 "firmware": "bios", "secure_boot": "disabled"}`

// agents is the fake agents' reporting loop.
type agents struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func (a *agents) stop() { a.once.Do(func() { a.cancel(); a.wg.Wait() }) }

// fakeAgents posts imaging reports for every task, with the task's
// report token, every 200 ms, so progress moves (1 MiB more each time,
// the machines at different speeds), until stopped (at the latest when
// the test ends).
func fakeAgents(t *testing.T, base string, f *fixture, tasks map[string]Task) *agents {
	ctx, cancel := context.WithCancel(context.Background())
	a := &agents{cancel: cancel}
	t.Cleanup(a.stop)
	const total = 512 << 20
	i := 0
	for mac, task := range tasks {
		i++
		tok := f.token(task.ID)
		speed, peers := int64(i)<<20, 2+i // i changes under the goroutine
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			done := int64(0)
			for n := 0; n < 3000; n++ {
				phase := "booting"
				if n > 0 {
					phase, done = "imaging", min(total, done+speed)
				}
				inv := ""
				if n == 0 {
					inv = `, "inventory": ` + consoleInventory
				}
				body := fmt.Sprintf(`{"task_id": %q, "phase": %q, "bytes_done": %d, "bytes_total": %d, "rate_bps": %d, "peers": %d%s}`,
					task.ID, phase, done, total, speed*5, peers, inv)
				req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/report/"+mac, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return // stopped
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("report %s = %d", body, resp.StatusCode)
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	return a
}

// evilSite serves, on ln (another port of the console's address), a page that tries to POST
// to target twice: a fetch with credentials (no-cors: it cannot read the
// answer) and an auto-submitted form in a hidden frame. It marks its body
// data-done when both were sent.
func evilSite(t *testing.T, ln net.Listener, target string) string {
	page := fmt.Sprintf(`<!doctype html><html><body><p id="status">sending</p>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="post" action=%q target="sink"><input name="x" value="1"></form>
<script>
fetch(%q, {method: 'POST', mode: 'no-cors', credentials: 'include', body: 'x'})
  .then(() => 'fetch sent', e => 'fetch error ' + e)
  .then(s => { document.getElementById('status').textContent = s; document.getElementById('f').submit(); document.body.dataset.done = 'true'; });
</script></body></html>`, target, target)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(page))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// wireFrame is an Ethernet frame carrying IPv4 UDP, as captured on the
// room's wire.
type wireFrame struct {
	ethDst, ethSrc net.HardwareAddr
	ipDst          netip.Addr
	udpPort        int
	payload        []byte
}

// schedules lists GET /api/schedules, as the admin API answers it.
func (f *fixture) schedules() []Schedule {
	f.t.Helper()
	w := f.admin("GET", "/api/schedules", "")
	var scs []Schedule
	if w.Code != http.StatusOK {
		f.t.Fatalf("GET /api/schedules = %d %s", w.Code, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &scs); err != nil {
		f.t.Fatalf("GET /api/schedules: %v: %s", err, w.Body)
	}
	return scs
}

// checkWakeFrames waits (at most 5 s) for one round of wc's magic packets
// on the room's wire and checks each: an Ethernet broadcast from the
// server's bridge, to UDP wc.Port, whose payload is exactly the magic
// packet for mac (6×0xff, 16× the MAC); one to the limited broadcast
// (out of wc.Interface) and one to each of wc.Addrs, and nothing more.
func checkWakeFrames(t *testing.T, wire *frameTap, wc wake.Config, from, mac net.HardwareAddr) {
	t.Helper()
	want := map[netip.Addr]bool{wake.LimitedBroadcast: true}
	for _, a := range wc.Addrs {
		want[a] = true
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(wire.udp(wc.Port)) < len(want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // any frame more than one round
	frames := wire.udp(wc.Port)
	// Written out here, not from wake.Packet, which is under test.
	packet := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat(mac, 16)...)
	seen := map[netip.Addr]int{}
	for _, f := range frames {
		seen[f.ipDst]++
		if got, _, err := wake.Parse(f.payload); err != nil || !bytes.Equal(f.payload, packet) {
			t.Errorf("frame to %v:%d carries %x (MAC %v, %v), want the magic packet for %v", f.ipDst, wc.Port, f.payload, got, err, mac)
		}
		if f.ethDst.String() != "ff:ff:ff:ff:ff:ff" {
			t.Errorf("frame to %v went to Ethernet %v, want broadcast", f.ipDst, f.ethDst)
		}
		if f.ethSrc.String() != from.String() {
			t.Errorf("frame to %v came from Ethernet %v, want the server's bridge %v", f.ipDst, f.ethSrc, from)
		}
	}
	for a := range want {
		if seen[a] != 1 {
			t.Errorf("%d magic packet(s) to %v on the room's wire, want 1 (frames to UDP %d: %v)", seen[a], a, wc.Port, seen)
		}
	}
	if len(frames) != len(want) {
		t.Errorf("%d frames to UDP %d on the room's wire, want %d (one round, one per destination): %v", len(frames), wc.Port, len(want), seen)
	}
}

// headlessBrowser starts headless Chromium (chromium, the binary) with a
// window of width × height, closed when the test ends, and returns its
// context (without a deadline: the caller sets one, and can still ask
// the browser where it is after that passed) and the folder for
// screenshots:
// $PXESWARM_SCREENSHOTS (ScreenshotsEnv) if set, else a
// temporary one.
func headlessBrowser(t *testing.T, chromium string, width, height int) (context.Context, string) {
	t.Helper()
	shots := os.Getenv(ScreenshotsEnv)
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(width, height), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelBrowser)
	return bctx, shots
}
