package pxe

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScheduleSurvivesRestart is the "done when": a schedule set
// one minute ahead, with wake, fires after the server restarted in
// between: the task is created once, its magic packet goes out, and a
// third start fires nothing more.
func TestScheduleSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits a minute for the schedule")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	wc, packets := wakeListener(t)
	site := func() *Site {
		s := loopbackSite(t, state, 1<<20)
		s.Wake = SiteWake{Broadcasts: wc.Addrs, Port: wc.Port, Retries: -1}
		return s
	}
	const mac = "52:54:00:aa:00:42"
	call := func(base, method, path, body string) (int, []byte) {
		t.Helper()
		token, _ := os.ReadFile(filepath.Join(state, "admin-token"))
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	tasks := func(base string) []Task {
		t.Helper()
		code, b := call(base, "GET", "/api/tasks", "")
		var ts []Task
		if code != 200 || json.Unmarshal(b, &ts) != nil {
			t.Fatalf("GET /api/tasks = %d %s", code, b)
		}
		return ts
	}

	s1 := site()
	_, stop := startSite(t, s1)
	at := time.Now().Add(time.Minute).Truncate(time.Second)
	code, body := call(s1.PublicURL, "POST", "/api/schedules",
		`{"at": "`+at.Format(time.RFC3339)+`", "macs": ["`+mac+`"], "image": "lab", "wake": true, "after": "poweroff"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /api/schedules = %d %s", code, body)
	}
	stop()

	s2 := site()
	_, stop = startSite(t, s2)
	if ts := tasks(s2.PublicURL); len(ts) != 0 {
		t.Fatalf("tasks before the schedule's time: %+v", ts)
	}
	var ts []Task
	for deadline := at.Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if ts = tasks(s2.PublicURL); len(ts) > 0 {
			break
		}
	}
	if len(ts) != 1 || ts[0].MAC != mac || ts[0].After != "poweroff" {
		t.Fatalf("tasks after the schedule's time = %+v, want one for %s with after=poweroff", ts, mac)
	}
	if late := ts[0].Created.Sub(at); late < 0 || late > 5*time.Second {
		t.Errorf("the task was created %v after the schedule's time, want within 5s", late)
	}
	if got := packets(500 * time.Millisecond); len(got) != 1 || got[0] != mac {
		t.Errorf("magic packets = %v, want one for %s", got, mac)
	}
	stop()

	// A third start finds the schedule done: nothing fires again.
	s3 := site()
	_, stop = startSite(t, s3)
	defer stop()
	time.Sleep(2 * time.Second)
	if ts := tasks(s3.PublicURL); len(ts) != 1 {
		t.Errorf("after a third start: %d tasks, want still 1", len(ts))
	}
	code, body = call(s3.PublicURL, "GET", "/api/schedules", "")
	var scs []Schedule
	if code != 200 || json.Unmarshal(body, &scs) != nil || len(scs) != 1 || len(scs[0].Runs) != 1 || !scs[0].Next.IsZero() {
		t.Errorf("schedules after the third start = %d %s, want one run and no next time", code, body)
	}
}
