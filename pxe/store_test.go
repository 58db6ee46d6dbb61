package pxe

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// testStore opens a store in a temporary folder with a clock that ticks
// one second per call, and closes it at the end.
func testStore(t testing.TB) *Store {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "state", "pxeswarm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.now = tickingClock()
	return s
}

func tickingClock() func() time.Time {
	var mu sync.Mutex
	now := time.Date(2026, 11, 26, 8, 0, 0, 123456789, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
}

func TestParseMAC(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"52:54:00:12:34:56", "52:54:00:12:34:56", true},
		{"52:54:00:AB:cd:EF", "52:54:00:ab:cd:ef", true},
		{"52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef", true},
		{"52-54-00:ab-cd-ef", "", false},
		{"52:54:00:12:34", "", false},
		{"52:54:00:12:34:5g", "", false},
		{"5254.0012.3456", "", false},
		{"52:54:00:12:34:56:78", "", false},
		{"", "", false},
		{"52_54_00_12_34_56", "", false},
		{"../../../etc/pass", "", false},
	} {
		got, err := protocol.ParseMAC(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseMAC(%q) = %q, %v, want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, protocol.ErrBadMAC) {
			t.Errorf("ParseMAC(%q) error %v does not wrap ErrBadMAC", tc.in, err)
		}
	}
}

func TestCanTransition(t *testing.T) {
	all := []protocol.TaskState{protocol.TaskPending, protocol.TaskBooting, protocol.TaskImaging, protocol.TaskSeeding, protocol.TaskDone, protocol.TaskFailed, protocol.TaskCanceled}
	// legal[from] lists every state from may move to.
	legal := map[protocol.TaskState][]protocol.TaskState{
		protocol.TaskPending:  {protocol.TaskPending, protocol.TaskBooting, protocol.TaskImaging, protocol.TaskSeeding, protocol.TaskDone, protocol.TaskFailed, protocol.TaskCanceled},
		protocol.TaskBooting:  {protocol.TaskBooting, protocol.TaskImaging, protocol.TaskSeeding, protocol.TaskDone, protocol.TaskFailed, protocol.TaskCanceled},
		protocol.TaskImaging:  {protocol.TaskBooting, protocol.TaskImaging, protocol.TaskSeeding, protocol.TaskDone, protocol.TaskFailed, protocol.TaskCanceled},
		protocol.TaskSeeding:  {protocol.TaskBooting, protocol.TaskSeeding, protocol.TaskDone, protocol.TaskFailed, protocol.TaskCanceled},
		protocol.TaskDone:     {protocol.TaskDone},
		protocol.TaskFailed:   {protocol.TaskFailed},
		protocol.TaskCanceled: {protocol.TaskCanceled},
	}
	for _, from := range all {
		for _, to := range all {
			want := false
			for _, l := range legal[from] {
				want = want || l == to
			}
			if got := protocol.CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	if protocol.CanTransition(protocol.TaskPending, "bogus") || protocol.CanTransition("bogus", protocol.TaskDone) {
		t.Errorf("CanTransition accepts an unknown state")
	}
}

// TestStoreReopen fills a store, closes it, opens the file again and
// expects every field back.
func TestStoreReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pxeswarm.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	s.now = tickingClock()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.PutMachine(Machine{MAC: "52-54-00-00-00-01", Name: "pc01", Group: "room1"}))
	must(s.SeeMachine("52:54:00:00:00:01", "198.18.0.11", "efi-x86_64"))
	if _, err := s.AdmitMachine("52:54:00:00:00:02", ""); err != nil {
		t.Fatal(err)
	}
	must(s.SeeMachine("52:54:00:00:00:02", "198.18.0.12", "bios"))
	must(s.PutMachine(Machine{MAC: "52:54:00:00:00:02", Name: "pc02", Group: "room1"}))
	t1, err := s.AddTask(Task{MAC: "52:54:00:00:00:01", Image: "win11", TaskSettings: TaskSettings{
		Target: protocol.Target{Disk: "first", Partition: 2}, CreateTable: true, CheckMode: "verify", SeedFor: "10m", After: "poweroff"}})
	must(err)
	_, err = s.Report("52:54:00:00:00:01", protocol.Report{TaskID: t1.ID, Phase: protocol.PhaseImaging, BytesDone: 5, BytesTotal: 10, RateBPS: 7, Peers: 3, Message: "half", From: "198.18.0.11"})
	must(err)
	t2, err := s.AddTask(Task{MAC: "52:54:00:00:00:02", Image: "ubuntu", TaskSettings: TaskSettings{Target: protocol.Target{Label: "root"}, CheckMode: "fresh", After: "reboot"}})
	must(err)
	_, err = s.Report("52:54:00:00:00:02", protocol.Report{TaskID: t2.ID, Phase: protocol.PhaseFailed, Error: "disk too small"})
	must(err)
	t3, err := s.AddTask(Task{MAC: "52:54:00:00:00:02", Image: "ubuntu", TaskSettings: TaskSettings{Target: protocol.Target{GUID: "0fc63daf-8483-4772-8e79-3d69d8477de4"}, CheckMode: "fresh", After: "shell"}})
	must(err)

	wantMachines, err := s.Machines()
	must(err)
	wantTasks, err := s.Tasks()
	must(err)
	if len(wantMachines) != 2 || len(wantTasks) != 3 {
		t.Fatalf("before reopen: %d machines, %d tasks, want 2 and 3", len(wantMachines), len(wantTasks))
	}
	// Spot-check that the fields were set at all, so the round trip
	// compares something.
	m1 := wantMachines[0]
	if m1.Name != "pc01" || m1.Group != "room1" || m1.IP != "198.18.0.11" || m1.Arch != "efi-x86_64" ||
		m1.FirstSeen.IsZero() || !m1.LastSeen.After(m1.FirstSeen) || m1.LastReport == nil || m1.LastReport.Peers != 3 {
		t.Errorf("machine 1 before reopen = %+v", m1)
	}
	if w := wantTasks[0]; w.State != protocol.TaskImaging || w.LastReport == nil || w.LastReport.BytesDone != 5 || !w.CreateTable || w.Target.Partition != 2 {
		t.Errorf("task 1 before reopen = %+v", w)
	}
	if w := wantTasks[1]; w.State != protocol.TaskFailed || w.Error != "disk too small" {
		t.Errorf("task 2 before reopen = %+v", w)
	}
	must(s.Close())

	s, err = OpenStore(path)
	must(err)
	defer s.Close()
	gotMachines, err := s.Machines()
	must(err)
	gotTasks, err := s.Tasks()
	must(err)
	if d := cmp.Diff(wantMachines, gotMachines); d != "" {
		t.Errorf("Machines() after reopen (-before +after):\n%s", d)
	}
	if d := cmp.Diff(wantTasks, gotTasks); d != "" {
		t.Errorf("Tasks() after reopen (-before +after):\n%s", d)
	}
	act, ok, err := s.ActiveTask("52:54:00:00:00:02")
	if err != nil || !ok || act.ID != t3.ID {
		t.Errorf("ActiveTask after reopen = %v, %v, %v, want task %s", act.ID, ok, err, t3.ID)
	}
	// The ID sequence continues: no reused IDs.
	t4, err := s.AddTask(Task{MAC: "52:54:00:00:00:03", Image: "x"})
	must(err)
	for _, old := range wantTasks {
		if old.ID == t4.ID {
			t.Errorf("new task after reopen reuses ID %s", t4.ID)
		}
	}
}

func TestStoreLocked(t *testing.T) {
	s := testStore(t)
	start := time.Now()
	s2, err := OpenStore(s.Path())
	if err == nil {
		s2.Close()
		t.Fatal("OpenStore of an open store succeeded, want a lock error")
	}
	if el := time.Since(start); el > 5*storeLockTimeout {
		t.Errorf("OpenStore of a locked store took %v", el)
	}
	if !strings.Contains(err.Error(), "another pxeswarm serve") {
		t.Errorf("OpenStore(locked) = %v, want a hint about another server", err)
	}
}

func TestOneActiveTaskPerMachine(t *testing.T) {
	s := testStore(t)
	const mac = "52:54:00:00:00:01"
	first, err := s.AddTask(Task{MAC: mac, Image: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.AddTask(Task{MAC: "52-54-00-00-00-01", Image: "b"})
	if !errors.Is(err, ErrActiveTask) || !strings.Contains(err.Error(), first.ID) {
		t.Fatalf("second AddTask = %v, want ErrActiveTask naming %s", err, first.ID)
	}
	// All or none: a batch with one machine in the way creates nothing.
	_, err = s.AddTasks([]Task{{MAC: "52:54:00:00:00:02", Image: "a"}, {MAC: mac, Image: "a"}})
	if !errors.Is(err, ErrActiveTask) {
		t.Fatalf("AddTasks with a busy machine = %v, want ErrActiveTask", err)
	}
	if _, ok, _ := s.ActiveTask("52:54:00:00:00:02"); ok {
		t.Errorf("AddTasks failed but created a task for the free machine")
	}
	_, err = s.AddTasks([]Task{{MAC: "52:54:00:00:00:03", Image: "a"}, {MAC: "52:54:00:00:00:03", Image: "b"}})
	if !errors.Is(err, ErrActiveTask) {
		t.Errorf("AddTasks with one machine twice = %v, want ErrActiveTask", err)
	}
	if _, err := s.AddTask(Task{MAC: "nope", Image: "a"}); !errors.Is(err, protocol.ErrBadMAC) {
		t.Errorf("AddTask(bad MAC) = %v, want ErrBadMAC", err)
	}
	if _, err := s.AddTask(Task{MAC: "52:54:00:00:00:04"}); !errors.Is(err, ErrBadTask) {
		t.Errorf("AddTask(no image) = %v, want ErrBadTask", err)
	}

	// Finishing the task frees the machine.
	if _, err := s.Transition(first.ID, protocol.TaskDone, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.ActiveTask(mac); ok {
		t.Errorf("ActiveTask after done = ok, want none")
	}
	second, err := s.AddTask(Task{MAC: mac, Image: "b"})
	if err != nil {
		t.Fatalf("AddTask after the first finished = %v", err)
	}
	if second.ID == first.ID || second.State != protocol.TaskPending {
		t.Errorf("second task = %+v", second)
	}
}

func TestTransition(t *testing.T) {
	s := testStore(t)
	task, _ := s.AddTask(Task{MAC: "52:54:00:00:00:01", Image: "a"})
	steps := []struct {
		to      protocol.TaskState
		errText string
		wantErr error
		want    protocol.TaskState
	}{
		{protocol.TaskBooting, "", nil, protocol.TaskBooting},
		{protocol.TaskPending, "", ErrBadTransition, protocol.TaskBooting},
		{protocol.TaskImaging, "", nil, protocol.TaskImaging},
		{protocol.TaskBooting, "", nil, protocol.TaskBooting}, // reboot mid-task
		{protocol.TaskSeeding, "", nil, protocol.TaskSeeding},
		{protocol.TaskImaging, "", ErrBadTransition, protocol.TaskSeeding},
		{"bogus", "", ErrBadTransition, protocol.TaskSeeding},
		{protocol.TaskFailed, "", nil, protocol.TaskFailed},
		{protocol.TaskFailed, "again", nil, protocol.TaskFailed},
		{protocol.TaskDone, "", ErrBadTransition, protocol.TaskFailed},
		{protocol.TaskCanceled, "", ErrBadTransition, protocol.TaskFailed},
	}
	for _, st := range steps {
		got, err := s.Transition(task.ID, st.to, st.errText)
		if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
			t.Errorf("Transition(%s, %s) = %v, want %v", task.ID, st.to, err, st.wantErr)
		}
		cur, _ := s.Task(task.ID)
		if cur.State != st.want {
			t.Errorf("after Transition(%s, %s): state %s, want %s", task.ID, st.to, cur.State, st.want)
		}
		if err == nil && got.State != st.want {
			t.Errorf("Transition(%s, %s) returned state %s, want %s", task.ID, st.to, got.State, st.want)
		}
	}
	cur, _ := s.Task(task.ID)
	if cur.Error != "failed (no reason given)" {
		t.Errorf("failed task Error = %q, want the first reason kept", cur.Error)
	}
	if _, err := s.Transition("t999", protocol.TaskDone, ""); !errors.Is(err, ErrNoTask) {
		t.Errorf("Transition(unknown) = %v, want ErrNoTask", err)
	}
}

// TestReportStates drives a task through its life with reports only.
func TestReportStates(t *testing.T) {
	s := testStore(t)
	const mac = "52:54:00:00:00:01"
	task, _ := s.AddTask(Task{MAC: mac, Image: "a"})
	other, _ := s.AddTask(Task{MAC: "52:54:00:00:00:02", Image: "a"})
	for _, st := range []struct {
		r       protocol.Report
		wantErr error
		want    protocol.TaskState
	}{
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseBooting}, nil, protocol.TaskBooting},
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseDisk}, nil, protocol.TaskImaging},
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseImaging, BytesDone: 1, BytesTotal: 2}, nil, protocol.TaskImaging},
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseImaging, BytesDone: 3, BytesTotal: 2}, protocol.ErrBadReport, protocol.TaskImaging},
		{protocol.Report{TaskID: task.ID, Phase: "dancing"}, protocol.ErrBadReport, protocol.TaskImaging},
		{protocol.Report{TaskID: other.ID, Phase: protocol.PhaseDone}, ErrNoTask, protocol.TaskImaging},
		{protocol.Report{TaskID: "t999", Phase: protocol.PhaseDone}, ErrNoTask, protocol.TaskImaging},
		{protocol.Report{Phase: protocol.PhaseFailed, Error: "no plan"}, nil, protocol.TaskImaging}, // no task: machine only
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseVerifying}, nil, protocol.TaskImaging},
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseSeeding, BytesDone: 2, BytesTotal: 2}, nil, protocol.TaskSeeding},
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseImaging}, ErrBadTransition, protocol.TaskSeeding},
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseDone}, nil, protocol.TaskDone},
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseDone}, nil, protocol.TaskDone}, // repeated: fine
		{protocol.Report{TaskID: task.ID, Phase: protocol.PhaseSeeding}, ErrBadTransition, protocol.TaskDone},
	} {
		_, err := s.Report(mac, st.r)
		if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
			t.Errorf("Report(%+v) = %v, want %v", st.r, err, st.wantErr)
		}
		cur, _ := s.Task(task.ID)
		if cur.State != st.want {
			t.Errorf("after Report(%+v): state %s, want %s", st.r, cur.State, st.want)
		}
	}
	m, err := s.Machine(mac)
	if err != nil || m.LastReport == nil || m.LastReport.Phase != protocol.PhaseSeeding || m.LastReport.At.IsZero() {
		t.Errorf("Machine(%s) = %+v, %v, want the last report (even a refused one) kept", mac, m, err)
	}
	if o, _ := s.Task(other.ID); o.State != protocol.TaskPending {
		t.Errorf("another machine's report for task %s moved it to %s", other.ID, o.State)
	}
	if _, err := s.Machine("52:54:00:99:99:99"); !errors.Is(err, ErrNoMachine) {
		t.Errorf("Machine(unknown) = %v, want ErrNoMachine", err)
	}
}

// TestStoreConcurrent hammers the store from goroutines (go test -race
// finds unsafe sharing) and checks nothing was lost.
func TestStoreConcurrent(t *testing.T) {
	s := testStore(t)
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mac := "52:54:00:00:01:" + string("0123456789abcdef"[i]) + "0"
			task, err := s.AddTask(Task{MAC: mac, Image: "a"})
			if err != nil {
				t.Error(err)
				return
			}
			for j := range 10 {
				if _, err := s.Report(mac, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseImaging, BytesDone: int64(j), BytesTotal: 10}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	tasks, _ := s.Tasks()
	ms, _ := s.Machines()
	if len(tasks) != n || len(ms) != n {
		t.Fatalf("after %d concurrent writers: %d tasks, %d machines", n, len(tasks), len(ms))
	}
	for _, task := range tasks {
		if task.LastReport == nil || task.LastReport.BytesDone != 9 || task.State != protocol.TaskImaging {
			t.Errorf("task %s = %+v, want the last report (9/10)", task.ID, task)
		}
	}
}
