package pxe

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// TestConsoleBrowserSwarm: in real headless Chromium, the swarm page
// draws who fed whom as agents report, without a reload (the event
// stream pushes it): an SVG arrow per edge, each named by its source and
// receiver, thicker for more bytes, and per machine what came from the
// server and from peers.
func TestConsoleBrowserSwarm(t *testing.T) {
	needs.Tool(t, "chromium")
	chromium, _ := exec.LookPath("chromium")
	f := newFixture(t, nil)
	macs := []string{"52:54:00:12:00:01", "52:54:00:12:00:02", "52:54:00:12:00:03"}
	tasks := make([]Task, len(macs))
	for i, mac := range macs {
		if err := f.store.PutMachine(Machine{MAC: mac, Name: fmt.Sprintf("pc-%02d", i+1), Group: "room-101"}); err != nil {
			t.Fatal(err)
		}
		tasks[i] = f.addTask(`{"mac": "` + mac + `", "image": "demo"}`)
	}
	base := serveLocal(t, f.cfg)
	report := func(i, port int, received string) {
		t.Helper()
		body := fmt.Sprintf(`{"task_id": %q, "phase": "imaging", "bytes_done": 1, "bytes_total": 100000000, "peer_port": %d, "received": [%s]}`, tasks[i].ID, port, received)
		if code := postReport(t, base, macs[i], body, f.token(tasks[i].ID)); code != http.StatusOK {
			t.Fatalf("report %s = %d, want 200", body, code)
		}
	}
	bctx, shots := headlessBrowser(t, chromium, 1280, 1100)
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	wait := func(what, cond string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			edges, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('swarm-graphs').innerHTML`))
			t.Fatalf("%s: %v\nswarm graphs: %s", what, err, edges)
		}
	}
	eval := func(expr string) float64 {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}

	run("log in", chromedp.Navigate(base+"/swarm"), chromedp.WaitVisible(chromedp.CSS(`[data-test=login-secret]`)),
		chromedp.SendKeys(chromedp.CSS(`[data-test=login-secret]`), testToken), chromedp.Click(chromedp.CSS(`[data-test=login-submit]`)),
		chromedp.WaitReady(chromedp.CSS(`#swarm-graphs[data-loaded=true]`))) // the login returns to the swarm page
	wait("no edges before any report", `document.querySelectorAll('[data-test=swarm-edge]').length === 0 && document.querySelector('[data-test=swarm-live]').dataset.state === 'live'`)

	const MiB = 1 << 20
	report(0, 7001, fmt.Sprintf(`{"from": "server", "bytes": %d}`, 10*MiB))
	report(1, 7002, fmt.Sprintf(`{"from": "127.0.0.1:7001", "bytes": %d}, {"from": "server", "bytes": %d}`, 6*MiB, 4*MiB))
	edge := func(from, to string) string {
		return fmt.Sprintf(`document.querySelector('[data-test=swarm-edge][data-from="%s"][data-to="%s"]')`, from, to)
	}
	wait("three edges", `document.querySelectorAll('[data-test=swarm-edge]').length === 3 && `+edge(macs[0], macs[1])+` !== null`)
	// Later reports arrive on the open page: pc-03 fed by both machines.
	report(2, 7003, fmt.Sprintf(`{"from": "127.0.0.1:7002", "bytes": %d}, {"from": "127.0.0.1:7001", "bytes": %d}, {"from": "server", "bytes": %d}`, 1*MiB, 2*MiB, 5*MiB))
	wait("six edges, live", `document.querySelectorAll('[data-test=swarm-edge]').length === 6 && `+edge(macs[1], macs[2])+` !== null`)

	width := func(from, to string) float64 {
		return eval(fmt.Sprintf(`parseFloat(%s.getAttribute('stroke-width'))`, edge(from, to)))
	}
	// Thicker for more bytes: 10 MiB > 6 MiB > 4 MiB > 1 MiB.
	ws := []float64{width("server", macs[0]), width(macs[0], macs[1]), width("server", macs[1]), width(macs[1], macs[2])}
	for i := 1; i < len(ws); i++ {
		if !(ws[i-1] > ws[i]) {
			t.Errorf("edge widths %v: want them decreasing with the bytes (10, 6, 4, 1 MiB)", ws)
			break
		}
	}
	if n := eval(`document.querySelectorAll('[data-test=swarm-node]').length`); n != 4 {
		t.Errorf("nodes = %v, want 4 (the server and three machines)", n)
	}
	if got := eval(`[...document.querySelectorAll('[data-test=swarm-node] text')].filter(e => /^(server|pc-0[123])$/.test(e.textContent)).length`); got != 4 {
		t.Errorf("node labels naming the server and pc-01..03: %v, want 4", got)
	}
	cell, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`[data-test=swarm-machine][data-mac="`+macs[2]+`"] [data-test=from-peers]`)))
	if err != nil || cell != "3.0 MiB" {
		t.Errorf("pc-03's from-peers cell = %q, %v; want 3.0 MiB", cell, err)
	}
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	checkNotBlank(t, "swarm-graph", buf)
	if err := os.WriteFile(filepath.Join(shots, "swarm-graph.png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}
