package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func goodInventory() *Inventory {
	return &Inventory{
		System: SystemInfo{Vendor: "LENOVO", Product: "ThinkCentre M720q", Serial: "PC1ABCDE",
			BoardVendor: "LENOVO", BoardName: "3136", BIOSVendor: "LENOVO", BIOSVersion: "M1UKT4BA", BIOSDate: "11/18/2024"},
		CPU:         CPUInfo{Model: "Intel(R) Core(TM) i5-8500T CPU @ 2.10GHz", Cores: 6, Threads: 6},
		MemoryBytes: 16 << 30,
		Disks:       []DiskInfo{{Name: "nvme0n1", Model: "SAMSUNG MZVLB256HAHQ-000L7", SizeBytes: 256060514304, Bus: BusNVMe}},
		NICs:        []NICInfo{{Name: "eno1", Driver: "e1000e", MAC: "e8:6a:64:01:02:03", SpeedMbps: 1000}},
		Firmware:    FirmwareUEFI,
		SecureBoot:  SecureBootEnabled,
	}
}

// TestInventoryRoundTrip: an inventory inside a report survives JSON both
// ways, and the report with it passes Check.
func TestInventoryRoundTrip(t *testing.T) {
	r := Report{TaskID: "t1", Phase: PhaseBooting, Inventory: goodInventory()}
	if err := r.Check(); err != nil {
		t.Fatalf("Check(good report with inventory) = %v", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // as the server decodes reports
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if diff := cmp.Diff(r, back); diff != "" {
		t.Errorf("round trip (-sent +got):\n%s", diff)
	}
	for _, key := range []string{`"secure_boot":"enabled"`, `"firmware":"uefi"`, `"bus":"nvme"`, `"speed_mbps":1000`, `"memory_bytes":17179869184`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}

func TestInventoryCheck(t *testing.T) {
	long := strings.Repeat("x", MaxInventoryText+1)
	for _, tc := range []struct {
		name string
		edit func(inv *Inventory)
		want string
	}{
		{"long vendor", func(inv *Inventory) { inv.System.Vendor = long }, "vendor"},
		{"control in serial", func(inv *Inventory) { inv.System.Serial = "a\x1b[2Jb" }, "serial"},
		{"invalid utf-8", func(inv *Inventory) { inv.System.Product = "a\xffb" }, "product"},
		{"C1 control", func(inv *Inventory) { inv.System.BIOSDate = "a\u0085b" }, "bios_date"},
		{"long cpu model", func(inv *Inventory) { inv.CPU.Model = long }, "cpu model"},
		{"negative cores", func(inv *Inventory) { inv.CPU.Cores = -1 }, "cores"},
		{"huge threads", func(inv *Inventory) { inv.CPU.Threads = 1 << 30 }, "threads"},
		{"negative memory", func(inv *Inventory) { inv.MemoryBytes = -5 }, "memory_bytes"},
		{"too many disks", func(inv *Inventory) {
			inv.Disks = make([]DiskInfo, MaxInventoryDisks+1)
			for i := range inv.Disks {
				inv.Disks[i].Name = "sda"
			}
		}, "disks"},
		{"disk without name", func(inv *Inventory) { inv.Disks[0].Name = "" }, "no name"},
		{"long disk name", func(inv *Inventory) { inv.Disks[0].Name = strings.Repeat("s", MaxInventoryName+1) }, "disk 0 name"},
		{"disk size", func(inv *Inventory) { inv.Disks[0].SizeBytes = -1 }, "size_bytes"},
		{"disk bus", func(inv *Inventory) { inv.Disks[0].Bus = "firewire" }, "bus"},
		{"too many nics", func(inv *Inventory) {
			inv.NICs = make([]NICInfo, MaxInventoryNICs+1)
			for i := range inv.NICs {
				inv.NICs[i].Name = "eth0"
			}
		}, "nics"},
		{"nic without name", func(inv *Inventory) { inv.NICs[0].Name = "" }, "no name"},
		{"nic driver", func(inv *Inventory) { inv.NICs[0].Driver = "e1000e\n" }, "driver"},
		{"upper-case mac", func(inv *Inventory) { inv.NICs[0].MAC = "E8:6A:64:01:02:03" }, "mac"},
		{"mac with dashes", func(inv *Inventory) { inv.NICs[0].MAC = "e8-6a-64-01-02-03" }, "mac"},
		{"half a mac", func(inv *Inventory) { inv.NICs[0].MAC = "e8:6a:6" }, "mac"},
		{"speed", func(inv *Inventory) { inv.NICs[0].SpeedMbps = -1 }, "speed_mbps"},
		{"firmware", func(inv *Inventory) { inv.Firmware = "coreboot" }, "firmware"},
		{"secure boot", func(inv *Inventory) { inv.SecureBoot = "on" }, "secure_boot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := goodInventory()
			tc.edit(inv)
			err := inv.Check()
			if err == nil || !errors.Is(err, ErrBadInventory) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check() = %v, want an ErrBadInventory saying %q", err, tc.want)
			}
			// A report carrying it is refused as a whole.
			r := Report{Phase: PhaseBooting, Inventory: inv}
			if err := r.Check(); !errors.Is(err, ErrBadReport) || !errors.Is(err, ErrBadInventory) {
				t.Errorf("Report.Check() = %v, want ErrBadReport and ErrBadInventory", err)
			}
			// Fit makes it acceptable.
			inv.Fit()
			if err := inv.Check(); err != nil {
				t.Errorf("after Fit, Check() = %v", err)
			}
		})
	}
	// InfiniBand's 20-octet address and an empty inventory are fine.
	inv := goodInventory()
	inv.NICs[0].MAC = strings.TrimSuffix(strings.Repeat("80:", 20), ":")
	if err := inv.Check(); err != nil {
		t.Errorf("Check(20-octet MAC) = %v", err)
	}
	if err := (&Inventory{}).Check(); err != nil {
		t.Errorf("Check(empty inventory) = %v", err)
	}
}

// TestInventoryFit: what the agent reads from a machine is clipped to
// the bounds, keeping what fits.
func TestInventoryFit(t *testing.T) {
	inv := &Inventory{
		System: SystemInfo{Vendor: "  QEMU\x00 \n", Product: strings.Repeat("é", MaxInventoryText)}, // 2 bytes a rune
		CPU:    CPUInfo{Model: "x\xff\xfey", Cores: -2, Threads: 4},
		Disks:  make([]DiskInfo, MaxInventoryDisks+3),
		NICs: []NICInfo{{Name: "eth0", MAC: " 52:54:00:12:34:56\n", SpeedMbps: -1},
			{Name: "\n"}, {Name: "eth1", MAC: "nonsense", Driver: "virtio_net"}},
		Firmware: "coreboot",
	}
	for i := range inv.Disks {
		inv.Disks[i] = DiskInfo{Name: "sd" + string(rune('a'+i)), Model: "QEMU HARDDISK   ", SizeBytes: 1 << 30, Bus: "sata"}
	}
	dd, dn := inv.Fit()
	if err := inv.Check(); err != nil {
		t.Fatalf("after Fit, Check() = %v", err)
	}
	if dd != 3 || dn != 1 {
		t.Errorf("Fit() dropped %d disks, %d nics, want 3, 1", dd, dn)
	}
	if inv.System.Vendor != "QEMU" {
		t.Errorf("vendor %q, want QEMU", inv.System.Vendor)
	}
	if p := inv.System.Product; len(p) != MaxInventoryText || !utf8.ValidString(p) {
		t.Errorf("product %q (%d bytes): want %d bytes of whole runes", p, len(p), MaxInventoryText)
	}
	if inv.CPU.Model != "xy" || inv.CPU.Cores != 0 || inv.CPU.Threads != 4 {
		t.Errorf("cpu %+v, want model xy, 0 cores, 4 threads", inv.CPU)
	}
	if len(inv.Disks) != MaxInventoryDisks || inv.Disks[0].Model != "QEMU HARDDISK" || inv.Disks[0].Bus != "" {
		t.Errorf("disks %+v: want %d, model QEMU HARDDISK, bus cleared", inv.Disks[0], len(inv.Disks))
	}
	want := []NICInfo{{Name: "eth0", MAC: "52:54:00:12:34:56"}, {Name: "eth1", Driver: "virtio_net"}}
	if diff := cmp.Diff(want, inv.NICs); diff != "" {
		t.Errorf("nics (-want +got):\n%s", diff)
	}
	if inv.Firmware != "" {
		t.Errorf("firmware %q, want cleared", inv.Firmware)
	}
}

// worstInventory is the largest inventory Check accepts: every list full,
// every string at its bound in characters that JSON escapes (<, > and &
// become \u003c: 6 bytes each).
func worstInventory() *Inventory {
	text, name := strings.Repeat("<", MaxInventoryText), strings.Repeat("&", MaxInventoryName)
	inv := &Inventory{
		System: SystemInfo{text, text, text, text, text, text, text, text, text},
		CPU:    CPUInfo{Model: text, Cores: maxCPUs, Threads: maxCPUs}, MemoryBytes: maxMemory,
		Firmware: FirmwareUEFI, SecureBoot: SecureBootDisabled,
	}
	for range MaxInventoryDisks {
		inv.Disks = append(inv.Disks, DiskInfo{Name: name, Model: text, SizeBytes: maxDiskBytes, Bus: BusVirtio})
	}
	for range MaxInventoryNICs {
		inv.NICs = append(inv.NICs, NICInfo{Name: name, Driver: name, MAC: strings.TrimSuffix(strings.Repeat("ff:", 20), ":"), SpeedMbps: maxSpeedMbps})
	}
	return inv
}

// TestInventoryJSONBound: the largest accepted inventory, in the largest
// accepted report without an error (the agent sends its inventory only
// in those), fits the server's default 64 KiB body limit.
func TestInventoryJSONBound(t *testing.T) {
	inv := worstInventory()
	if err := inv.Check(); err != nil {
		t.Fatalf("Check(worst) = %v", err)
	}
	b, _ := json.Marshal(inv)
	if len(b) > MaxInventoryJSON {
		t.Errorf("worst inventory is %d bytes of JSON, more than MaxInventoryJSON %d", len(b), MaxInventoryJSON)
	}
	r := Report{TaskID: strings.Repeat("t", 64), Phase: PhaseBooting, BytesDone: 1 << 62, BytesTotal: 1 << 62, RateBPS: 1 << 62, Peers: 1 << 30,
		Message: strings.Repeat("<", MaxReportText), Inventory: inv}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	rb, _ := json.Marshal(r)
	t.Logf("worst inventory %d bytes, worst report with it %d bytes", len(b), len(rb))
	if len(rb) > 64<<10 {
		t.Errorf("worst report with inventory is %d bytes, over the server's default 64 KiB body limit", len(rb))
	}
}

// FuzzInventory: whatever a LAN host sends as a report's inventory,
// decoding never panics; what Check accepts round-trips through JSON and
// stays under MaxInventoryJSON; and Fit makes anything decoded pass Check.
func FuzzInventory(f *testing.F) {
	b, _ := json.Marshal(Report{Phase: PhaseBooting, Inventory: goodInventory()})
	f.Add(b)
	w, _ := json.Marshal(worstInventory())
	f.Add([]byte(`{"phase":"booting","inventory":` + string(w) + `}`))
	f.Add([]byte(`{"phase":"booting","inventory":{"disks":[{"name":"\u0000","size_bytes":-1}],"nics":[{"name":"e","mac":"AA"}]}}`))
	f.Add([]byte(`{"phase":"booting","inventory":{"cpu":{"model":"\ud800","cores":99999999}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Report
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if dec.Decode(&r) != nil || r.Inventory == nil {
			return
		}
		inv := r.Inventory
		if err := inv.Check(); err == nil {
			out, err := json.Marshal(inv)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) > MaxInventoryJSON {
				t.Fatalf("accepted inventory is %d bytes of JSON", len(out))
			}
			var back Inventory
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(*inv, back, cmpopts.EquateEmpty()); diff != "" { // omitempty drops an empty list
				t.Fatalf("round trip (-accepted +decoded):\n%s", diff)
			}
		} else if !errors.Is(err, ErrBadInventory) {
			t.Fatalf("Check() = %v, does not wrap ErrBadInventory", err)
		}
		inv.Fit()
		if err := inv.Check(); err != nil {
			t.Fatalf("after Fit, Check() = %v", err)
		}
	})
}
