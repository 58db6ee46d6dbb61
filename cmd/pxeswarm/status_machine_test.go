package main

import (
	"crypto/ed25519"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// TestStatusMachine: `pxeswarm status --machine MAC` against a real
// server handler shows the machine's task and the inventory its agent
// reported; before any report it says there is none yet, and a MAC the
// server does not know is an error.
func TestStatusMachine(t *testing.T) {
	st, err := pxe.OpenStore(filepath.Join(t.TempDir(), "pxeswarm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	h, err := pxe.HTTPConfig{PublicURL: "http://198.18.0.1:8080", Store: st, Key: key}.Handler()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	const mac = "52:54:00:ab:00:07"
	task, err := st.AddTask(pxe.Task{MAC: mac, Image: "lab"})
	if err != nil {
		t.Fatal(err)
	}

	out, err := run(t, "status", "--server", srv.URL, "--machine", strings.ToUpper(mac))
	if err != nil || !strings.Contains(out, "none yet") || !strings.Contains(out, task.ID+": image lab, pending") {
		t.Errorf("status --machine before any report: %v\n%s", err, out)
	}

	inv := &protocol.Inventory{
		System:      protocol.SystemInfo{Vendor: "Dell Inc.", Product: "OptiPlex 7070", Serial: "5XYZ123"},
		CPU:         protocol.CPUInfo{Model: "Intel(R) Core(TM) i5-9500 CPU @ 3.00GHz", Cores: 6, Threads: 6},
		MemoryBytes: 16 << 30,
		Disks:       []protocol.DiskInfo{{Name: "nvme0n1", Model: "PM981a NVMe SAMSUNG 512GB", SizeBytes: 512110190592, Bus: protocol.BusNVMe}},
		NICs:        []protocol.NICInfo{{Name: "eno1", Driver: "e1000e", MAC: mac, SpeedMbps: 1000}, {Name: "wlp2s0", Driver: "iwlwifi", MAC: "a4:c3:f0:00:00:01"}},
		Firmware:    protocol.FirmwareUEFI, SecureBoot: protocol.SecureBootEnabled,
	}
	if _, err := st.Report(mac, protocol.Report{TaskID: task.ID, Phase: protocol.PhaseBooting, Inventory: inv}); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "status", "--server", srv.URL, "--machine", mac)
	if err != nil {
		t.Fatalf("status --machine: %v\n%s", err, out)
	}
	t.Logf("status --machine %s:\n%s", mac, out)
	for _, want := range []string{
		"Dell Inc. OptiPlex 7070, serial 5XYZ123",
		"UEFI, Secure Boot on",
		"Intel(R) Core(TM) i5-9500 CPU @ 3.00GHz (6 cores, 6 threads)",
		"16GiB",
		"nvme0n1", "PM981a NVMe SAMSUNG 512GB", "476.9GiB",
		"e1000e", "1000 Mb/s", "iwlwifi", "link down",
		task.ID + ": image lab, booting",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status --machine output lacks %q:\n%s", want, out)
		}
	}

	if out, err := run(t, "status", "--server", srv.URL, "--machine", "02:00:00:00:00:99"); err == nil || !strings.Contains(out, "404") {
		t.Errorf("status --machine for an unknown MAC: %v\n%s; want a 404 error", err, out)
	}
	if out, err := run(t, "status", "--server", srv.URL, "--machine", "nonsense"); err == nil || !strings.Contains(out, "--machine") {
		t.Errorf("status --machine nonsense: %v\n%s; want a flag error", err, out)
	}
}
