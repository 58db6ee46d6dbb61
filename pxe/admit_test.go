package pxe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/dhcp"
)

// admitSite is the site's store, DHCP handler (full mode, socket-free)
// and HTTP handler, composed as Start composes them.
type admitSite struct {
	store *Store
	dhcp  *dhcp.Handler
	http  http.Handler
}

func newAdmitSite(t *testing.T, auto string, maxMachines int, listed ...string) *admitSite {
	t.Helper()
	dir := t.TempDir()
	s := loopbackSite(t, filepath.Join(dir, "state"), 1<<20)
	s.Address = netip.MustParseAddr("198.18.0.1")
	s.Interface = "br0"
	s.DHCP = SiteDHCP{Mode: "full", PoolStart: netip.MustParseAddr("198.18.0.100"), PoolEnd: netip.MustParseAddr("198.18.0.199"), PrefixLen: 24}
	s.Plan.Auto = auto
	s.MaxMachines = maxMachines
	for _, m := range listed {
		s.Machines = append(s.Machines, SiteMachine{MAC: m, Name: "pc-" + m})
	}
	s.ApplyDefaults()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if err := s.prepareHost(); err != nil {
		t.Fatal(err)
	}
	store, err := s.openStore()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	log := testlog.New(t)
	cat, err := s.openCatalog(context.Background(), log, store)
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadOrCreateKey(s.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	auto2 := s.newBackend(store, cat, log)
	dcfg := s.dhcpConfig(log, store, auto2, make(chan Machine, 1024))
	h, err := dcfg.Handler(log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	web, err := HTTPConfig{PublicURL: s.PublicURL, Store: store, Key: key, Kernel: s.HTTP.Kernel, Initramfs: s.HTTP.Initramfs,
		Catalog: cat, AdminToken: testToken}.HandlerWithLog(log)
	if err != nil {
		t.Fatal(err)
	}
	return &admitSite{store: store, dhcp: h, http: web}
}

// pxeDiscover sends a PXE firmware DISCOVER (x86-64 UEFI) from mac and
// returns the boot file offered ("" if none, or no reply).
func (a *admitSite) pxeDiscover(t *testing.T, mac net.HardwareAddr) (string, bool) {
	t.Helper()
	m, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 7}))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := a.dhcp.Reply(m.ToBytes(), 67, netip.MustParseAddrPort("0.0.0.0:68"))
	if out == nil {
		return "", false
	}
	r, err := dhcpv4.FromBytes(out)
	if err != nil {
		t.Fatal(err)
	}
	return r.BootFileNameOption(), true
}

func (a *admitSite) counts(t *testing.T) (machines, tasks int) {
	t.Helper()
	ms, err := a.store.Machines()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := a.store.Tasks()
	if err != nil {
		t.Fatal(err)
	}
	return len(ms), len(ts)
}

func madeUp(i int) string { return fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff) }

// TestForgedRequestsAddNothing: with plan.auto = all, 300 boot scripts,
// plans and reports for made-up MACs add no machine and no task (before,
// each added a machine record and a task); a machine the DHCP service saw
// PXE-boot is added and gets its task at once, and fetching its script
// and plan leaves the task pending until its agent reports.
func TestForgedRequestsAddNothing(t *testing.T) {
	a := newAdmitSite(t, "all", 0)
	real := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0, 1}
	if file, ok := a.pxeDiscover(t, real); !ok || file != ShimName {
		t.Fatalf("DISCOVER from a new PXE client = %q (reply %v), want %s (the default UEFI loader): plan.auto gives it a task", file, ok, ShimName)
	}
	task, ok, err := a.store.ActiveTask(real.String())
	if err != nil || !ok || task.State != protocol.TaskPending {
		t.Fatalf("after its DISCOVER: ActiveTask = %+v, %v, %v; want a pending task", task, ok, err)
	}
	m0, t0 := a.counts(t)
	if m0 != 1 || t0 != 1 {
		t.Fatalf("after one PXE client: %d machines, %d tasks; want 1 and 1", m0, t0)
	}

	for i := range 300 {
		mac := madeUp(i)
		for _, path := range []string{"/boot/" + mac + ".ipxe", "/plan/" + mac + "?nonce=" + testNonce} {
			w := httptest.NewRecorder()
			a.http.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
			if w.Code >= 500 {
				t.Fatalf("GET %s = %d %s", path, w.Code, w.Body)
			}
		}
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/api/report/"+mac, bytes.NewReader([]byte(`{"phase": "booting", "message": "agent up"}`)))
		r.Header.Set("Content-Type", "application/json")
		a.http.ServeHTTP(w, r)
		if w.Code != http.StatusNotFound {
			t.Fatalf("report from made-up %s = %d %s, want 404", mac, w.Code, w.Body)
		}
	}
	if m, n := a.counts(t); m != m0 || n != t0 {
		t.Errorf("after 300 forged scripts, plans and reports: %d machines, %d tasks; want %d and %d", m, n, m0, t0)
	}

	// The real machine's iPXE script and plan change nothing either.
	for _, path := range []string{"/boot/" + real.String() + ".ipxe", "/plan/" + real.String() + "?nonce=" + testNonce} {
		w := httptest.NewRecorder()
		a.http.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, w.Code, w.Body)
		}
	}
	if got, _ := a.store.Task(task.ID); got.State != protocol.TaskPending {
		t.Errorf("after its script and plan the task is %s, want pending", got.State)
	}
}

// TestMachineCap: made-up PXE clients fill the store only up to
// max_machines. Without tasks the least recently seen are pruned (a
// listed machine never is); with plan.auto = all each holds a task, so
// past the cap new ones are not added (and get no task).
func TestMachineCap(t *testing.T) {
	const limit = 20
	listed := "52:54:00:aa:00:09"
	a := newAdmitSite(t, "none", limit, listed)
	clock := tickingClock()
	a.store.now = clock
	for i := range 100 {
		mac, _ := net.ParseMAC(madeUp(i))
		a.pxeDiscover(t, mac)
		if m, _ := a.counts(t); m > limit {
			t.Fatalf("after %d made-up clients the store holds %d machines, cap %d", i+1, m, limit)
		}
	}
	if _, err := a.store.Machine(listed); err != nil {
		t.Errorf("the listed machine was pruned: %v", err)
	}
	if _, err := a.store.Machine(madeUp(99)); err != nil {
		t.Errorf("the newest client is missing: %v", err)
	}
	if _, err := a.store.Machine(madeUp(0)); !errors.Is(err, ErrNoMachine) {
		t.Errorf("the oldest client is still there (%v), want it pruned", err)
	}

	b := newAdmitSite(t, "all", limit)
	for i := range 100 {
		mac, _ := net.ParseMAC(madeUp(i))
		b.pxeDiscover(t, mac)
	}
	m, n := b.counts(t)
	if m != limit || n != limit {
		t.Errorf("plan.auto = all, 100 made-up clients: %d machines, %d tasks; want %d and %d", m, n, limit, limit)
	}
	if _, err := b.store.AdmitMachine(madeUp(500), ""); !errors.Is(err, ErrTooManyMachines) {
		t.Errorf("AdmitMachine past the cap with every machine tasked = %v, want ErrTooManyMachines", err)
	}
}

// TestAgentDHCPStartsAutoTask: under plan.auto = all, a terminal whose
// agent asks our DHCP without a PXE boot first (booted from a stick, or
// straight into the kernel as the QEMU agent test does) gets its task
// like a PXE client; a made-up MAC that only asks HTTP still gets none.
func TestAgentDHCPStartsAutoTask(t *testing.T) {
	a := newAdmitSite(t, "all", 0)
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0, 9}
	m, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(protocol.AgentVendorClass)))
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := a.dhcp.Reply(m.ToBytes(), 67, netip.MustParseAddrPort("0.0.0.0:68")); out == nil {
		t.Fatal("no reply to the agent's DISCOVER")
	}
	task, ok, err := a.store.ActiveTask(mac.String())
	if err != nil || !ok || task.State != protocol.TaskPending {
		t.Fatalf("after the agent's DISCOVER: task %+v, %v, %v; want a pending task (plan.auto = all)", task, ok, err)
	}
}
