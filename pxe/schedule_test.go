package pxe

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/pxe/wake"
)

func TestParseWeekly(t *testing.T) {
	for in, want := range map[string]string{
		"fri 22:00": "fri 22:00", "Friday 7:05": "fri 07:05", "mon-fri 18:30": "mon-fri 18:30",
		"daily 06:00": "daily 06:00", "mon-sun 06:00": "daily 06:00", "sat,mon 00:00": "mon,sat 00:00",
		"fri-mon 23:59": "mon,fri-sun 23:59", "tue,wed 12:00": "tue,wed 12:00", "sun 01:00": "sun 01:00",
	} {
		w, err := ParseWeekly(in)
		if err != nil {
			t.Errorf("ParseWeekly(%q): %v", in, err)
			continue
		}
		if got := w.String(); got != want {
			t.Errorf("ParseWeekly(%q).String() = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "fri", "22:00", "fri 24:00", "fri 22:60", "fri 22:0", "fry 22:00", "fri 22:00 extra",
		"fri -1:00", "fri 022:00", "mon- 10:00", ",fri 10:00", "fri 10:00:00", strings.Repeat("mon,", 30) + "tue 10:00"} {
		if _, err := ParseWeekly(bad); !errors.Is(err, ErrBadWeekly) {
			t.Errorf("ParseWeekly(%q) = %v, want ErrBadWeekly", bad, err)
		}
	}
}

func TestWeeklyNext(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin") // time/tzdata: never missing
	if err != nil {
		t.Fatal(err)
	}
	w, _ := ParseWeekly("fri 22:00")
	// Thursday 2026-12-03 10:00 → Friday 22:00 the next day.
	after := time.Date(2026, 12, 3, 10, 0, 0, 0, berlin)
	if got, want := w.Next(after, berlin), time.Date(2026, 12, 4, 22, 0, 0, 0, berlin); !got.Equal(want) {
		t.Errorf("Next(%v) = %v, want %v", after, got, want)
	}
	// At the very moment it fires, the next one is a week later.
	at := time.Date(2026, 12, 4, 22, 0, 0, 0, berlin)
	if got, want := w.Next(at, berlin), at.AddDate(0, 0, 7); !got.Equal(want) {
		t.Errorf("Next(at its own time) = %v, want %v", got, want)
	}
	// Across the spring DST change (2027-03-28, Berlin): still 22:00
	// local, so 167 hours after the week before.
	before := time.Date(2027, 3, 26, 22, 0, 0, 0, berlin)
	next := w.Next(before, berlin)
	if h, m, _ := next.Clock(); h != 22 || m != 0 || next.Sub(before) != 167*time.Hour {
		t.Errorf("Next across DST = %v (%v later), want 22:00 local, 167h later", next, next.Sub(before))
	}
	d, _ := ParseWeekly("mon-fri 07:00")
	sat := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	if got := d.Next(sat, time.UTC); got.Weekday() != time.Monday || got.Day() != 7 {
		t.Errorf("mon-fri after a Saturday = %v, want Monday the 7th", got)
	}
}

func FuzzParseWeekly(f *testing.F) {
	for _, s := range []string{"fri 22:00", "mon-fri 18:30", "daily 06:00", "sat,mon 7:05", "fri-mon 23:59", "x 1:1"} {
		f.Add(s, int64(1796000000))
	}
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		w, err := ParseWeekly(s)
		if err != nil {
			return
		}
		canon := w.String()
		w2, err := ParseWeekly(canon)
		if err != nil || w2 != w {
			t.Fatalf("%q → %q → %+v, %v: the canonical form does not read back", s, canon, w2, err)
		}
		after := time.Unix(unix%(1<<40), 0)
		next := w.Next(after, time.UTC)
		if !next.After(after) || next.Sub(after) > 7*24*time.Hour || !w.Days[next.Weekday()] || next.Hour() != w.Hour || next.Minute() != w.Minute {
			t.Fatalf("%q.Next(%v) = %v", canon, after, next)
		}
	})
}

// fakeClock is a settable clock for the scheduler.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *fakeClock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// TestSchedulerFiresOnce drives the scheduler with a fake clock over a
// store: a one-time schedule fires once at its time (tasks for free
// machines, the busy one skipped), a second pass and a second scheduler
// on the same store fire nothing more, a weekly schedule missed while
// "down" fires once within the grace and is recorded as missed past it,
// and a deleted schedule never fires.
func TestSchedulerFiresOnce(t *testing.T) {
	store := testStore(t)
	log := testlog.New(t)
	clock := &fakeClock{t: time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)}
	cfg := ScheduleConfig{Store: store, Grace: time.Hour, Location: time.UTC, Now: clock.Now}
	sched, other := NewScheduler(cfg), NewScheduler(cfg)

	busy, err := store.AddTask(Task{MAC: macB, Image: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	at := clock.Now().Add(time.Minute)
	once, err := store.AddSchedule(Schedule{At: at, Next: at, MACs: []string{macA, macB}, Image: "demo", TaskSettings: TaskSettings{After: "poweroff"}})
	if err != nil {
		t.Fatal(err)
	}
	if next := sched.RunDue(log); !next.Equal(at) {
		t.Errorf("RunDue before the time fired something or reported next %v, want %v", next, at)
	}
	clock.Add(61 * time.Second)
	var wg sync.WaitGroup
	for _, s := range []*Scheduler{sched, other, sched} {
		wg.Add(1)
		go func() { defer wg.Done(); s.RunDue(log) }()
	}
	wg.Wait()
	tasks, _ := store.Tasks()
	if len(tasks) != 2 || tasks[1].MAC != macA || tasks[1].After != "poweroff" {
		t.Fatalf("tasks after the schedule fired = %+v, want busy's and one for %s with after=poweroff", tasks, macA)
	}
	scs, _ := store.Schedules()
	if len(scs) != 1 || !scs[0].Next.IsZero() || len(scs[0].Runs) != 1 {
		t.Fatalf("schedule after firing = %+v, want one run and no next", scs)
	}
	if run := scs[0].Runs[0]; len(run.Tasks) != 1 || len(run.Skipped) != 1 || !strings.Contains(run.Skipped[0], busy.ID) {
		t.Errorf("run = %+v, want one task and %s skipped for its task %s", run, macB, busy.ID)
	}
	_ = once

	// A weekly schedule whose time passed 30 minutes ago (the server was
	// down) fires once, then waits for next week.
	wk, _ := ParseWeekly("fri 22:00")
	due := time.Date(2026, 12, 4, 22, 0, 0, 0, time.UTC)
	clock.Set(due.Add(-time.Hour))
	store.Transition(tasks[1].ID, "canceled", "test")
	weekly, _ := store.AddSchedule(Schedule{Weekly: wk.String(), Next: wk.Next(clock.Now(), time.UTC), MACs: []string{macA}, Image: "demo"})
	clock.Set(due.Add(30 * time.Minute))
	sched.RunDue(log)
	sched.RunDue(log)
	scs, _ = store.Schedules()
	if got := scs[1]; got.ID != weekly.ID || len(got.Runs) != 1 || len(got.Runs[0].Tasks) != 1 || !got.Next.Equal(due.AddDate(0, 0, 7)) {
		t.Fatalf("weekly schedule 30 min late = %+v, want one run with a task and next %v", got, due.AddDate(0, 0, 7))
	}
	// Two hours past next week's time (grace 1h): missed, nothing started.
	active, _, _ := store.ActiveTask(macA)
	store.Transition(active.ID, "canceled", "test")
	clock.Set(due.AddDate(0, 0, 7).Add(2 * time.Hour))
	sched.RunDue(log)
	scs, _ = store.Schedules()
	if runs := scs[1].Runs; len(runs) != 2 || !runs[1].Missed || len(runs[1].Tasks) != 0 || !strings.Contains(runs[1].Error, "grace") {
		t.Errorf("weekly schedule 2h late = %+v, want a second run marked missed with no task", runs)
	}
	if _, ok, _ := store.ActiveTask(macA); ok {
		t.Error("a missed schedule started a task")
	}

	// A deleted schedule never fires.
	at = clock.Now().Add(time.Minute)
	gone, _ := store.AddSchedule(Schedule{At: at, Next: at, MACs: []string{macA}, Image: "demo"})
	if _, err := store.DeleteSchedule(gone.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.DeleteSchedule(gone.ID); !errors.Is(err, ErrNoSchedule) {
		t.Errorf("deleting twice = %v, want ErrNoSchedule", err)
	}
	clock.Add(2 * time.Minute)
	sched.RunDue(log)
	if _, ok, _ := store.ActiveTask(macA); ok {
		t.Error("a deleted schedule started a task")
	}
}

// wakeListener is a UDP socket on loopback standing in for a room's
// broadcast address; packets returns the MACs of the magic packets it got.
func wakeListener(t *testing.T) (wake.Config, func(time.Duration) []string) {
	t.Helper()
	ln, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := ln.ReadFrom(buf)
			if err != nil {
				return
			}
			if mac, _, err := wake.Parse(buf[:n]); err == nil {
				mu.Lock()
				got = append(got, mac.String())
				mu.Unlock()
			}
		}
	}()
	cfg := wake.Config{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Port: ln.LocalAddr().(*net.UDPAddr).Port}
	return cfg, func(wait time.Duration) []string {
		time.Sleep(wait)
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// TestWakeAPI: only the admin token wakes; a wake reaches the listener;
// POST /api/tasks with wake creates the task first, then sends, and
// retries until the machine is seen.
func TestWakeAPI(t *testing.T) {
	wc, packets := wakeListener(t)
	var waker *Waker
	f := newFixture(t, func(c *HTTPConfig) {
		var err error
		waker, err = NewWaker(t.Context(), WakeConfig{Send: wc, Every: 200 * time.Millisecond, Retries: 10, Store: c.Store}, testlog.New(t))
		if err != nil {
			t.Fatal(err)
		}
		c.Wake = waker
		c.Scheduler = NewScheduler(ScheduleConfig{Store: c.Store})
	})
	body := `{"macs": ["` + strings.ToUpper(macA) + `", "` + macA + `"]}`
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong-token-0123456789"}} {
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/api/wake", body},
			{"POST", "/api/schedules", `{"weekly": "fri 22:00", "macs": ["` + macA + `"], "image": "demo", "wake": true}`},
			{"DELETE", "/api/schedules/s1", ""},
			{"POST", "/api/tasks", `{"mac": "` + macA + `", "image": "demo", "wake": true}`},
		} {
			wantJSONError(t, r.method+" "+r.path+" without the token", f.do(r.method, r.path, r.body, hdr...), http.StatusUnauthorized, "admin token")
		}
	}
	if got := packets(300 * time.Millisecond); len(got) != 0 {
		t.Fatalf("requests without the token sent %d magic packets", len(got))
	}
	if w := f.do("GET", "/api/status", ""); !strings.Contains(w.Body.String(), `"wake": true`) {
		t.Errorf("GET /api/status does not say wake is on: %s", w.Body)
	}
	if scs, _ := f.store.Schedules(); len(scs) != 0 {
		t.Fatalf("requests without the token made schedules: %+v", scs)
	}

	w := f.admin("POST", "/api/wake", body)
	var reply WakeReply
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &reply) != nil || len(reply.Sent) != 1 || reply.Sent[0].MAC != macA ||
		reply.Sent[0].To != netip.AddrPortFrom(wc.Addrs[0], uint16(wc.Port)).String() {
		t.Fatalf("POST /api/wake = %d %s, want one packet for %s", w.Code, w.Body, macA)
	}
	if got := packets(200 * time.Millisecond); len(got) != 1 || got[0] != macA {
		t.Fatalf("listener got %v, want one packet for %s", got, macA)
	}
	wantJSONError(t, "wake with both", f.admin("POST", "/api/wake", `{"macs": ["`+macA+`"], "group": "x"}`), 400, "either macs")
	wantJSONError(t, "wake of an empty group", f.admin("POST", "/api/wake", `{"group": "nobody"}`), 400, "no known machine")
	wantJSONError(t, "wake of a bad MAC", f.admin("POST", "/api/wake", `{"macs": ["nope"]}`), 400, "")

	// Wake and deploy: the task exists, packets go, and they go again
	// (every 200ms here, up to 10 times) until the machine is seen.
	w = f.admin("POST", "/api/tasks", `{"mac": "`+macB+`", "image": "demo", "wake": true}`)
	var ct CreatedTasks
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &ct) != nil || len(ct.Tasks) != 1 || len(ct.Sent) != 1 {
		t.Fatalf("POST /api/tasks with wake = %d %s", w.Code, w.Body)
	}
	got := packets(500 * time.Millisecond)
	if n := strings.Count(strings.Join(got, " "), macB); n < 2 {
		t.Fatalf("packets for %s within 500ms = %d, want the first and at least one retry", macB, n)
	}
	// The machine PXE-boots: DHCP records it; retries stop.
	if err := f.store.SeeMachine(macB, "198.18.0.20", "bios"); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(strings.Join(packets(300*time.Millisecond), " "), macB)
	after := strings.Count(strings.Join(packets(700*time.Millisecond), " "), macB)
	if after != before {
		t.Errorf("packets for %s went on after it was seen: %d then %d", macB, before, after)
	}
	if before > 11 {
		t.Errorf("%d packets for %s: more than 1 + 10 retries", before, macB)
	}
}

// TestScheduleAPI checks the schedule routes' validation and listing.
func TestScheduleAPI(t *testing.T) {
	f := newFixture(t, func(c *HTTPConfig) { c.Scheduler = NewScheduler(ScheduleConfig{Store: c.Store, Location: time.UTC}) })
	for _, tc := range []struct{ body, hint string }{
		{`{"macs": ["` + macA + `"], "image": "demo"}`, "either at"},
		{`{"at": "2020-01-01T00:00:00Z", "macs": ["` + macA + `"], "image": "demo"}`, "in the past"},
		{`{"at": "tomorrow", "macs": ["` + macA + `"], "image": "demo"}`, "RFC 3339"},
		{`{"weekly": "fry 22:00", "macs": ["` + macA + `"], "image": "demo"}`, "not a day"},
		{`{"weekly": "fri 22:00", "image": "demo"}`, "either macs"},
		{`{"weekly": "fri 22:00", "macs": ["` + macA + `"], "image": "nope"}`, "not published"},
		{`{"weekly": "fri 22:00", "macs": ["` + macA + `"], "image": "demo", "after": "explode"}`, "after"},
		{`{"weekly": "fri 22:00", "macs": ["` + macA + `"], "image": "demo", "wake": true}`, "wake-on-LAN is off"},
	} {
		w := f.admin("POST", "/api/schedules", tc.body)
		if w.Code < 400 || !strings.Contains(w.Body.String(), tc.hint) {
			t.Errorf("POST /api/schedules %s = %d %s, want an error mentioning %q", tc.body, w.Code, w.Body, tc.hint)
		}
	}
	w := f.admin("POST", "/api/schedules", `{"name": "room 101", "weekly": "Friday 22:00", "mac": "`+macA+`", "image": "demo", "after": "poweroff"}`)
	var sc Schedule
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &sc) != nil || sc.ID != "s1" || sc.Weekly != "fri 22:00" ||
		sc.Next.Weekday() != time.Friday || sc.After != "poweroff" || sc.CheckMode == "" {
		t.Fatalf("POST /api/schedules = %d %s", w.Code, w.Body)
	}
	var list []Schedule
	if w := f.do("GET", "/api/schedules", ""); w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &list) != nil || len(list) != 1 || list[0].ID != "s1" {
		t.Fatalf("GET /api/schedules = %d %s", w.Code, w.Body)
	}
	if w := f.admin("DELETE", "/api/schedules/s1", ""); w.Code != 200 {
		t.Fatalf("DELETE = %d %s", w.Code, w.Body)
	}
	wantJSONError(t, "DELETE again", f.admin("DELETE", "/api/schedules/s1", ""), 404, "no such schedule")
}
