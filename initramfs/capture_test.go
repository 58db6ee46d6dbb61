package initramfs

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/partition/partitiontest"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// goldenMachine is a fake machine whose disk vda holds a GPT with a FAT
// ESP and an ext4 root, each with files; it returns the machine, the
// disk's path, the volumes (their files, for checking copies) and the
// partitions' starts.
func goldenMachine(t *testing.T, partSize, diskSize int64) (partition.Config, string, []*fstest.Volume, []int64) {
	t.Helper()
	esp := fstest.RandomFile(t, "esp.img", partSize, 11)
	root := fstest.RandomFile(t, "root.img", partSize, 12)
	vols := []*fstest.Volume{
		fstest.MakeFAT(t, esp, fstest.NewFiles(t, 12, 300<<10), "-F", "16"),
		fstest.MakeExt(t, root, fstest.NewFiles(t, 10, 500<<10), "-t", "ext4"),
	}
	c := partitiontest.Machine(t)
	tab := partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "vda", Size: diskSize, Model: "GOLDEN", Serial: "SN-G",
		Layout: &imager.Layout{Table: "gpt", Parts: []imager.PartInfo{
			{Number: 1, Size: partSize, Label: "ESP", Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
			{Number: 2, Size: partSize, Label: "root"},
		}}, KernelPartitions: true})
	disk := c.Dev + "/vda"
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, src := range []string{esp, root} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(b, tab.Partitions[i].Start); err != nil {
			t.Fatal(err)
		}
	}
	return c, disk, vols, []int64{tab.Partitions[0].Start, tab.Partitions[1].Start}
}

// adminPost POSTs body as JSON to the test server's admin API.
func (s *server) adminPost(t *testing.T, path string, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", s.url+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// captureTask creates a capture task through POST /api/tasks.
func (s *server) captureTask(t *testing.T, name string, target protocol.Target, raw bool) pxe.Task {
	t.Helper()
	code, out := s.adminPost(t, "/api/tasks", pxe.CreateTasks{Action: protocol.ActionCapture, MAC: testMAC, Image: name, Target: &target, Raw: raw, After: "reboot"})
	if code != http.StatusCreated {
		t.Fatalf("POST /api/tasks (capture) = %d %s", code, out)
	}
	var ct pxe.CreatedTasks
	if err := json.Unmarshal(out, &ct); err != nil || len(ct.Tasks) != 1 || ct.Tasks[0].Capture == "" {
		t.Fatalf("POST /api/tasks (capture) answered %s (%v)", out, err)
	}
	return ct.Tasks[0]
}

// TestRunCaptureThenDeploy: a capture task through the admin API; the
// agent PXE-boots on it (in process, against the real HTTP server),
// reads the golden disk's GPT and each filesystem's used map, uploads
// the used bytes with the plan's secret and reports done once the server
// published the image; the golden disk is byte-identical before and
// after, and the server took in about the used bytes. Then another
// machine's agent deploys the captured image from the swarm onto a disk
// full of random bytes, and each filesystem checks clean with identical
// files.
func TestRunCaptureThenDeploy(t *testing.T) {
	const partSize, diskSize = 20 * MiB, 48 * MiB
	s := newServer(t)
	golden, disk, vols, starts := goldenMachine(t, partSize, diskSize)
	before := fileSum(t, disk)

	task := s.captureTask(t, "golden", protocol.Target{Disk: "vda"}, false)
	r := agentConfig(t, s, golden, "")
	if err := r.run(t); err != nil {
		t.Fatalf("capture Run = %v", err)
	}
	r.wantMarkers(t,
		"pxeswarm: plan ok task="+task.ID+" image=golden",
		"pxeswarm: disk "+disk+" 48MiB model=\"GOLDEN\"",
		"pxeswarm: capturing "+disk+" table=gpt parts=2 send ",
		"pxeswarm: CAPTURE DONE image=golden infohash=",
		"pxeswarm: rebooting",
	)
	if after := fileSum(t, disk); after != before {
		t.Errorf("the golden disk changed during the capture")
	}
	st, err := s.caps.State(task.Capture)
	if err != nil || st.State != protocol.CapturePublished || st.Image != "golden" {
		t.Fatalf("capture %s = %+v, %v; want published as golden", task.Capture, st, err)
	}
	if got := s.state(t, task.ID); got.State != protocol.TaskDone || !strings.Contains(got.LastReport.Message, "infohash="+st.InfoHash) {
		t.Errorf("capture task = %s, last report %+v; want done naming infohash=%s", got.State, got.LastReport, st.InfoHash)
	}
	if ph := s.phases(task.ID); !isSubsequence([]string{protocol.PhaseBooting, protocol.PhaseDisk, protocol.PhaseCapturing, protocol.PhaseDone}, ph) {
		t.Errorf("capture task's report phases = %v", ph)
	}
	if !strings.Contains(r.line(MarkCaptureDone), "infohash="+st.InfoHash) {
		t.Errorf("console's %q line does not name the published info-hash %s", MarkCaptureDone, st.InfoHash)
	}
	var used int64
	for i, v := range vols {
		used += v.Used(t, fstest.Extract(t, disk, starts[i], partSize))
	}
	t.Logf("server took in %d bytes for %d used by the filesystems (%.3f×)", st.BytesIn, used, float64(st.BytesIn)/float64(used))
	if st.BytesIn < used || st.BytesIn > used+used/20 {
		t.Errorf("server took in %d bytes, want the %d the filesystems use, at most 5%% more", st.BytesIn, used)
	}

	// The published image, seeded as the server's seeder would, deployed
	// to a blank machine.
	ci, ok := s.cat.Get("golden")
	if !ok || ci.Image.InfoHash.HexString() != st.InfoHash || len(ci.Source) != 2 {
		t.Fatalf("catalog has no golden image of info-hash %s and two parts: %+v", st.InfoHash, ci)
	}
	seed := imager.Config{Image: ci.Image, Paths: ci.Source, Mode: imager.ModeSeed, Listen: "127.0.0.1:0", Trackers: []string{s.url + "/announce"}}
	sess, err := seed.Join(context.Background(), infoLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	s.trk.Publish(ci.Image.InfoHash, "golden")
	s.mu.Lock()
	s.seeders = map[string]string{"golden": sess.ListenAddr()}
	s.mu.Unlock()

	blank, target := fakeMachine(t, diskSize)
	fstest.Fill(t, target, MiB, diskSize-2*MiB, 78)
	old := fstest.RandomFile(t, "old.img", diskSize-2*MiB, 78)
	dep, err := s.store.AddTask(pxe.Task{MAC: testMAC, Image: "golden", TaskSettings: pxe.TaskSettings{
		Target: protocol.Target{Disk: "vda"}, CreateTable: true, CheckMode: "fresh", After: "reboot"}})
	if err != nil {
		t.Fatal(err)
	}
	r2 := agentConfig(t, s, blank, "")
	if err := r2.run(t); err != nil {
		t.Fatalf("deploy Run = %v", err)
	}
	r2.wantMarkers(t, "pxeswarm: plan ok task="+dep.ID+" image=golden", "pxeswarm: IMAGE DONE", "pxeswarm: rebooting")
	if !strings.Contains(r2.line(MarkImageDone), "infohash="+st.InfoHash) {
		t.Errorf("deploy wrote another image than the captured %s", st.InfoHash)
	}
	checkUsedDisk(t, target, diskSize, ci.Image, vols, old)
}

// TestRunCaptureRefusals: a capture task for a disk the machine lacks
// fails before anything is sent, and the failed task drops its capture
// (the secret is spent); a forged upload with another secret is refused;
// and a capture task cannot target a group or carry deploy settings.
func TestRunCaptureRefusals(t *testing.T) {
	s := newServer(t)
	golden, disk, _, _ := goldenMachine(t, 20*MiB, 48*MiB)
	before := fileSum(t, disk)

	task := s.captureTask(t, "golden", protocol.Target{Disk: "vdz"}, false)
	r := agentConfig(t, s, golden, "")
	if err := r.run(t); err == nil {
		t.Fatal("capture of a missing disk: Run = nil")
	}
	r.wantMarkers(t, "pxeswarm: plan ok task="+task.ID, "pxeswarm: ERROR no disk to capture")
	if got := s.state(t, task.ID); got.State != protocol.TaskFailed {
		t.Errorf("task = %s, want failed", got.State)
	}
	if st, err := s.caps.State(task.Capture); err != nil || st.State != protocol.CaptureFailed {
		t.Errorf("capture of the failed task = %+v, %v; want failed (dropped)", st, err)
	}
	if fileSum(t, disk) != before {
		t.Errorf("the golden disk changed")
	}

	// A forged manifest: the capture ID is public (GET /api/captures),
	// the secret is not.
	task2 := s.captureTask(t, "golden2", protocol.Target{Disk: "vda"}, false)
	req, _ := http.NewRequest("PUT", s.url+"/api/captures/"+task2.Capture+"/manifest", strings.NewReader(`{"table":"","disk_size":512,"parts":[{"number":0,"start":0,"size":512}]}`))
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("ab", 24))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged manifest answered %d, want 401", resp.StatusCode)
	}
	// The admin cancels the task: its capture is dropped too.
	if code, out := s.adminPost(t, "/api/tasks/"+task2.ID+"/cancel", nil); code != http.StatusOK {
		t.Fatalf("cancel = %d %s", code, out)
	}
	if st, _ := s.caps.State(task2.Capture); st.State != protocol.CaptureFailed {
		t.Errorf("capture of a canceled task is %s, want failed", st.State)
	}

	for name, body := range map[string]pxe.CreateTasks{
		"group":        {Action: protocol.ActionCapture, Group: "room", Image: "g"},
		"check mode":   {Action: protocol.ActionCapture, MAC: testMAC, Image: "g", Check: "verify"},
		"bad name":     {Action: protocol.ActionCapture, MAC: testMAC, Image: "../g"},
		"unknown verb": {Action: "wipe", MAC: testMAC, Image: "demo"},
		"raw deploy":   {MAC: testMAC, Image: "demo", Raw: true},
	} {
		if code, out := s.adminPost(t, "/api/tasks", body); code != http.StatusBadRequest {
			t.Errorf("%s: POST /api/tasks = %d %s, want 400", name, code, out)
		}
	}
	_ = time.Second
}
