package initramfs

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// TestRunSendsInventory: an agent run on a fake machine sends what the
// machine's sysfs, procfs and efivarfs say with its first report on the
// task (not with the task-less one before the plan, which the server
// would not trust), once, and the server's GET /api/machines/{mac}
// returns it.
func TestRunSendsInventory(t *testing.T) {
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "first"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	disks, _ := fakeMachine(t, 32*MiB)
	root := filepath.Dir(disks.Sys)
	fakeTree(t, disks.Sys, map[string]string{
		"class/dmi/id/sys_vendor":                            "QEMU\n",
		"class/dmi/id/product_name":                          "Standard PC (Q35 + ICH9, 2009)\n",
		"class/dmi/id/bios_version":                          "1.16.3-debian-1.16.3-2\n",
		"devices/pci0000:00/0000:00:02.0/net/enp0s2/address": testMAC + "\n",
		"devices/pci0000:00/0000:00:02.0/net/enp0s2/speed":   "1000\n",
		"devices/pci0000:00/0000:00:02.0/net/enp0s2/device":  "../../../0000:00:02.0@",
		"devices/pci0000:00/0000:00:02.0/driver":             "../../../bus/pci/drivers/e1000e@",
		"class/net/enp0s2":                                   "../../devices/pci0000:00/0000:00:02.0/net/enp0s2@",
		"firmware/efi/fw_platform_size":                      "64\n",
	})
	proc, efivars := filepath.Join(root, "proc"), filepath.Join(root, "efivars")
	fakeTree(t, proc, map[string]string{
		"cpuinfo": cpuinfo("QEMU Virtual CPU version 2.5+", 1, 2, 1),
		"meminfo": "MemTotal:        2014412 kB\n",
	})
	fakeTree(t, efivars, map[string]string{secureBootVar: "\x06\x00\x00\x00\x00"})
	r := agentConfig(t, s, disks, "console=ttyS0")
	r.cfg.Proc, r.cfg.EFIVars = proc, efivars
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := s.state(t, task.ID); got.State != protocol.TaskDone {
		t.Fatalf("task %s after Run = %s, want done", task.ID, got.State)
	}
	want := &protocol.Inventory{
		System:      protocol.SystemInfo{Vendor: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)", BIOSVersion: "1.16.3-debian-1.16.3-2"},
		CPU:         protocol.CPUInfo{Model: "QEMU Virtual CPU version 2.5+", Cores: 2, Threads: 2},
		MemoryBytes: 2014412 << 10,
		Disks:       []protocol.DiskInfo{{Name: "vda", Model: "QEMU HARDDISK", SizeBytes: 32 * MiB}},
		NICs:        []protocol.NICInfo{{Name: "enp0s2", Driver: "e1000e", MAC: testMAC, SpeedMbps: 1000}},
		Firmware:    protocol.FirmwareUEFI,
		SecureBoot:  protocol.SecureBootDisabled,
	}

	// What the agent sent: one inventory, on its first report on the task.
	s.mu.Lock()
	first, sent := -1, 0
	for i, rep := range s.reports {
		if first < 0 && rep.TaskID == task.ID {
			first = i
		}
		if rep.Inventory != nil {
			sent++
			if i != first || s.status[i] != http.StatusOK {
				t.Errorf("report %d (task %q, phase %s, answered %d) carries the inventory; want only the first on task %s (report %d)",
					i, rep.TaskID, rep.Phase, s.status[i], task.ID, first)
			}
		}
	}
	s.mu.Unlock()
	if sent != 1 {
		t.Errorf("the agent sent its inventory %d times, want once", sent)
	}

	// What the server's API returns.
	resp, err := http.Get(s.url + "/api/machines/" + testMAC)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m pxe.MachineStatus
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/machines/%s = %s, %v", testMAC, resp.Status, err)
	}
	if diff := cmp.Diff(want, m.Inventory); diff != "" {
		t.Errorf("GET /api/machines/%s inventory (-want +got):\n%s", testMAC, diff)
	}
}
