package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
)

// runCapture is `make demo-capture`: the image's life from a golden
// machine. pc1 holds a system (the test OS: a FAT ESP and an ext4 data
// partition with files); `pxeswarm capture --mac` gives it a capture task
// and it PXE-boots the agent, which uploads the disk's used blocks. The
// server publishes the image at once; pc2 and pc3 then deploy it from the
// swarm and boot the golden system.
func (d *demo) runCapture(ctx context.Context, dataSize int64) error {
	boot, err := d.prepare(ctx, "demo-capture")
	if err != nil {
		return err
	}
	step("building the golden system: GPT, an EFI system partition that boots it and a %s ext4 data partition with files", bytesize.Format(dataSize))
	golden, err := build.TestOSConfig{Dir: filepath.Join(d.work, "golden"), ESPSize: 40 << 20, DataSize: dataSize, DataFiles: 200}.Build(ctx, d.log)
	if err != nil {
		return err
	}
	if err := d.classroom(ctx, boot, "starting pxeswarm serve with no image yet (full DHCP, TFTP, HTTP, tracker; captures on)", []*machine{
		{name: "pc1-golden", fw: qemu.UEFI, mac: "52:54:00:de:00:11"},
		{name: "pc2-uefi", fw: qemu.UEFI, mac: "52:54:00:de:00:12"},
		{name: "pc3-uefi", fw: qemu.UEFI, mac: "52:54:00:de:00:13"},
	}); err != nil {
		return err
	}
	g := d.machines[0]
	if err := golden.WriteDisk(g.disk, 256<<20); err != nil {
		return err
	}
	before, err := sha256File(g.disk)
	if err != nil {
		return err
	}
	fmt.Printf("%s's disk holds the golden system (it prints: %s %s); disk sha256 %s\n", g.name, build.NewSystemMarker, golden.Digest, before[:16])

	step("capturing %s over PXE: pxeswarm capture --mac %s --name golden (waits until the server publishes it)", g.name, g.mac)
	tokenFile := filepath.Join(d.work, "state", "admin-token")
	capture := exec.CommandContext(ctx, "ip", "netns", "exec", d.ns, d.bin, "capture", "--server", serverURL, "--token-file", tokenFile,
		"--name", "golden", "--mac", g.mac, "--target", "first", "--progress-every", "3s")
	capture.Stdout, capture.Stderr = os.Stdout, os.Stdout
	if err := capture.Start(); err != nil {
		return err
	}
	capDone := make(chan error, 1)
	go func() { capDone <- capture.Wait() }()
	// The task exists once the command printed it; give it a moment.
	time.Sleep(2 * time.Second)
	g.started = time.Now()
	vm, err := d.start(ctx, g, "capture boot")
	if err != nil {
		return err
	}
	for _, s := range []struct {
		marker  string
		timeout time.Duration
	}{{"pxeswarm: plan ok", 6 * time.Minute}, {"pxeswarm: capturing", 2 * time.Minute}, {"pxeswarm: CAPTURE DONE", 10 * time.Minute}, {"pxeswarm: rebooting", time.Minute}} {
		if _, err := vm.Expect(s.marker, s.timeout); err != nil {
			vm.Kill()
			return fmt.Errorf("%s: %w (console: %s)", g.name, err, g.console.f.Name())
		}
	}
	g.done = time.Since(g.started)
	vm.Wait()
	select {
	case err := <-capDone:
		if err != nil {
			return fmt.Errorf("pxeswarm capture: %w", err)
		}
	case <-time.After(time.Minute):
		capture.Process.Kill()
		return fmt.Errorf("pxeswarm capture did not see the image published a minute after the machine said so")
	}
	after, err := sha256File(g.disk)
	if err != nil {
		return err
	}
	if after != before {
		return fmt.Errorf("%s's disk changed during the capture (sha256 %s, was %s)", g.name, after[:16], before[:16])
	}
	fmt.Printf("%s's disk is unchanged (sha256 %s); it captured in %s\n", g.name, after[:16], g.done.Round(time.Second))

	step("deploying the captured image to pc2 and pc3 (tasks through the admin API), from the swarm")
	copies := d.machines[1:]
	for _, m := range copies {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", d.ns, "curl", "-sS", "-f", "-X", "POST",
			"-H", "Authorization: Bearer "+readToken(tokenFile), "-H", "Content-Type: application/json",
			"--data", fmt.Sprintf(`{"mac":%q,"image":"golden"}`, m.mac), serverURL+"/api/tasks").CombinedOutput()
		if err != nil {
			return fmt.Errorf("deploy task for %s: %v: %s", m.name, err, out)
		}
	}
	if err := d.imageAll(ctx, copies); err != nil {
		return err
	}
	step("booting every machine again: no task now, so each boots its own disk and the golden system")
	d.tos = golden
	return d.rebootAll(ctx)
}

func readToken(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// sha256File is the hex SHA-256 of a file.
func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
