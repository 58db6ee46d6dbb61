package pxe

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/protocol"
	bolt "go.etcd.io/bbolt"
)

func testInventory(serial string) *protocol.Inventory {
	return &protocol.Inventory{
		System:      protocol.SystemInfo{Vendor: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)", Serial: serial},
		CPU:         protocol.CPUInfo{Model: "QEMU Virtual CPU version 2.5+", Cores: 2, Threads: 2},
		MemoryBytes: 2 << 30,
		Disks:       []protocol.DiskInfo{{Name: "sda", Model: "QEMU HARDDISK", SizeBytes: 8 << 30, Bus: protocol.BusATA}},
		NICs:        []protocol.NICInfo{{Name: "eth0", Driver: "e1000", MAC: macA, SpeedMbps: 1000}},
		Firmware:    protocol.FirmwareUEFI,
		SecureBoot:  protocol.SecureBootDisabled,
	}
}

func reportJSON(t *testing.T, r protocol.Report) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// machine is GET /api/machines/{mac}.
func (f *fixture) machine(mac string) MachineStatus {
	f.t.Helper()
	w := f.do("GET", "/api/machines/"+mac, "")
	var m MachineStatus
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &m) != nil {
		f.t.Fatalf("GET /api/machines/%s = %d %s", mac, w.Code, w.Body)
	}
	return m
}

// TestInventoryAPI: an inventory is stored with the machine only from a
// report its task's token vouches for; GET /api/machines and
// GET /api/machines/{mac} return it, and no stored report repeats it.
func TestInventoryAPI(t *testing.T) {
	f := newFixture(t, nil)
	task := f.addTask(`{"mac": "` + macA + `", "image": "demo"}`)
	other := f.addTask(`{"mac": "` + macB + `", "image": "demo"}`)
	asJSON := []string{"Content-Type", "application/json"}
	withToken := func(id string) []string { return append(asJSON, "Authorization", "Bearer "+f.token(id)) }
	forged := testInventory("FORGED")

	// Refused or untrusted reports carry an inventory in vain.
	for _, tc := range []struct {
		name string
		mac  string
		rep  protocol.Report
		hdr  []string
		code int
	}{
		// Any LAN host can send a report without a task: the machine's
		// last report changes, its inventory must not.
		{"no task, no token", macA, protocol.Report{Phase: protocol.PhaseBooting, Inventory: forged}, asJSON, 200},
		{"no token", macA, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseBooting, Inventory: forged}, asJSON, 401},
		{"another machine's task and token", macA, protocol.Report{TaskID: other.ID, Phase: protocol.PhaseBooting, Inventory: forged}, withToken(other.ID), 400},
	} {
		w := f.do("POST", "/api/report/"+tc.mac, reportJSON(t, tc.rep), tc.hdr...)
		if w.Code != tc.code {
			t.Errorf("%s: report = %d %s, want %d", tc.name, w.Code, w.Body, tc.code)
		}
		for _, mac := range []string{macA, macB} {
			if m := f.machine(mac); m.Inventory != nil {
				t.Errorf("%s: machine %s took the inventory: %+v", tc.name, mac, m.Inventory)
			}
		}
	}

	// The agent's own first report on its task.
	inv := testInventory("SN-A")
	if w := f.do("POST", "/api/report/"+macA, reportJSON(t, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseBooting, Message: "plan verified", Inventory: inv}), withToken(task.ID)...); w.Code != http.StatusOK {
		t.Fatalf("agent's report with inventory = %d %s", w.Code, w.Body)
	}
	m := f.machine(macA)
	if diff := cmp.Diff(inv, m.Inventory); diff != "" {
		t.Errorf("GET /api/machines/%s inventory (-sent +got):\n%s", macA, diff)
	}
	if m.InventoryAt.IsZero() || m.Task == nil || m.Task.ID != task.ID {
		t.Errorf("GET /api/machines/%s: inventory_at %v, task %+v; want a time and task %s", macA, m.InventoryAt, m.Task, task.ID)
	}
	if m.LastReport == nil || m.LastReport.Inventory != nil || m.Task.LastReport == nil || m.Task.LastReport.Inventory != nil {
		t.Errorf("the stored reports repeat the inventory: machine %+v, task %+v", m.LastReport, m.Task.LastReport)
	}
	var list []MachineStatus
	w := f.do("GET", "/api/machines", "")
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list) != 2 {
		t.Fatalf("GET /api/machines = %s, %v", w.Body, err)
	}
	for _, ms := range list {
		switch ms.MAC {
		case macA:
			if diff := cmp.Diff(inv, ms.Inventory); diff != "" {
				t.Errorf("GET /api/machines: %s's inventory (-sent +got):\n%s", macA, diff)
			}
		case macB:
			if ms.Inventory != nil {
				t.Errorf("GET /api/machines: %s has an inventory it never reported: %+v", macB, ms.Inventory)
			}
		}
	}
	if n := strings.Count(w.Body.String(), `"inventory"`); n != 1 {
		t.Errorf("GET /api/machines names an inventory %d times, want once (not in last_report)", n)
	}

	// Progress reports without one keep it; an inventory over the bounds
	// is refused with its report and keeps it too.
	f.agent(macA, `{"task_id": "`+task.ID+`", "phase": "imaging", "bytes_done": 1, "bytes_total": 2}`)
	big := testInventory("SN-BIG")
	big.Disks = make([]protocol.DiskInfo, protocol.MaxInventoryDisks+1)
	for i := range big.Disks {
		big.Disks[i] = protocol.DiskInfo{Name: "sda", SizeBytes: 1}
	}
	wantJSONError(t, "report with too many disks", f.do("POST", "/api/report/"+macA,
		reportJSON(t, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseImaging, Inventory: big}), withToken(task.ID)...), 400, "disks")
	if got := f.machine(macA).Inventory; got == nil || got.System.Serial != "SN-A" {
		t.Errorf("after a progress report and a refused one, inventory %+v, want SN-A's", got)
	}
	// A newer one replaces it.
	f.do("POST", "/api/report/"+macA, reportJSON(t, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseImaging, Inventory: testInventory("SN-A2")}), withToken(task.ID)...)
	if got := f.machine(macA).Inventory; got == nil || got.System.Serial != "SN-A2" {
		t.Errorf("after a new inventory, %+v, want SN-A2's", got)
	}
	// A report the task's state refuses (it was canceled) stores none.
	if w := f.admin("POST", "/api/tasks/"+task.ID+"/cancel", ""); w.Code != http.StatusOK {
		t.Fatalf("cancel = %d %s", w.Code, w.Body)
	}
	w = f.do("POST", "/api/report/"+macA, reportJSON(t, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseImaging, Inventory: testInventory("SN-LATE")}), withToken(task.ID)...)
	if w.Code != http.StatusConflict {
		t.Errorf("report on a canceled task = %d %s, want 409", w.Code, w.Body)
	}
	if got := f.machine(macA).Inventory; got == nil || got.System.Serial != "SN-A2" {
		t.Errorf("a refused report on a canceled task changed the inventory to %+v", got)
	}

	wantJSONError(t, "unknown machine", f.do("GET", "/api/machines/02:00:00:00:00:99", ""), 404, "GET /api/machines")
	wantJSONError(t, "not a MAC", f.do("GET", "/api/machines/nonsense", ""), 400, "MAC")
	if w := f.do("POST", "/api/machines/"+macA, "{}"); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/machines/{mac} = %d, want 405", w.Code)
	}
}

// TestStoreReadsOldMachines: a machine record written before inventories
// (no inventory fields) still reads, and takes one on the next report.
func TestStoreReadsOldMachines(t *testing.T) {
	s := testStore(t)
	old := `{"mac":"` + macA + `","name":"pc1","ip":"198.18.0.10","first_seen":"2026-01-02T03:04:05Z","last_seen":"2026-01-02T03:04:05Z","last_report":{"task_id":"","phase":"booting","bytes_done":0,"bytes_total":0,"rate_bps":0,"peers":0}}`
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMachines).Put([]byte(macA), []byte(old)) }); err != nil {
		t.Fatal(err)
	}
	m, err := s.Machine(macA)
	if err != nil || m.Name != "pc1" || m.Inventory != nil || !m.InventoryAt.IsZero() {
		t.Fatalf("Machine(old record) = %+v, %v", m, err)
	}
	task, err := s.AddTask(Task{MAC: macA, Image: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Report(macA, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseBooting, Inventory: testInventory("SN-1")}); err != nil {
		t.Fatal(err)
	}
	if m, _ = s.Machine(macA); m.Inventory == nil || m.Inventory.System.Serial != "SN-1" || m.Name != "pc1" {
		t.Errorf("after a report, machine %+v, want pc1 with SN-1's inventory", m)
	}
}
