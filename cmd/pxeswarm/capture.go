package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/capture"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

func runCapture(ctx context.Context, args []string) error {
	fs := newFlagSet("capture", "--server URL --token-file FILE --name NAME (--disk /dev/X | --mac MAC) [flags]", `
Capture a golden disk into a new image on the boot server. Two ways:

  --mac MAC (no --disk): over PXE. The server gets a capture task for the
    machine; when it PXE-boots (power it on, or wake it), its signed plan
    says capture, and the agent uploads the disk --target names, then
    reboots into its own system. This command waits and shows progress
    until the image is published (Ctrl-C stops waiting, not the capture).
  --disk /dev/X: from this machine, any Linux that reaches the server (the
    golden PC booted from the rescue stick or a live system).

Either way the disk's partition table (GPT or MBR, or none) is recorded,
and of each partition whose filesystem pxeswarm reads (ext2/3/4, FAT, NTFS,
swap) only the used blocks are sent; other partitions are sent whole. The server checks that it has room before anything is sent, hashes
what it receives itself, and publishes the image at once: it is seeded and
a deploy task can use it right away (pxeswarm serve keeps running).

The disk is opened read-only and never written. Refused, with what to do:
  - a partition mounted read-write (its files change while they are read):
    unmount it or remount it read-only, or give --force;
  - a Windows volume that is hibernated (Fast Startup) or was not shut
    down cleanly: shut Windows down fully (shutdown /s /f /t 0);
  - a BitLocker volume: decrypt or suspend BitLocker first;
    --raw sends every byte instead of reading the used blocks.

A dropped connection is resumed from the server's offset, not restarted.
Capturing a NAME the server has already makes a new version, NAME-v2,
NAME-v3, …; the old image stays until it is deleted
(DELETE /api/images/NAME). The published name is printed at the end.

Examples:
  pxeswarm capture --server https://198.18.0.1:8443 --fingerprint AB:CD:… \
      --token-file /var/lib/pxeswarm/admin-token --name win11 --mac 52:54:00:12:34:56
  pxeswarm capture --server https://198.18.0.1:8443 --fingerprint AB:CD:… \
      --token-file /var/lib/pxeswarm/admin-token --name win11 --disk /dev/sda`)
	fs.section("capture")
	server := fs.String("server", "", "the boot server's URL; its admin URL (https://…) when it serves the admin API over HTTPS (required)")
	tokenFile := fs.String("token-file", "", "file holding the server's admin token (<state_dir>/admin-token on the server) (required)")
	name := fs.String("name", "", "image name: letters, digits, '.', '_', '-' (required)")
	disk := fs.String("disk", "", "the golden disk here: /dev/sda, a partition, or an image file (or give --mac)")
	fingerprint := fs.String("fingerprint", "", "with an https:// --server: trust exactly the certificate of this SHA-256 fingerprint (pxeswarm serve logs it as https_fingerprint=)")
	mac := fs.String("mac", "", "without --disk: the golden machine, captured when it PXE-boots; with --disk: the machine's MAC for the server's status")
	raw := fs.Bool("raw", false, "send every byte of every partition, without reading used blocks (BitLocker, unknown filesystems)")
	force := fs.Bool("force", false, "capture even if a partition is mounted read-write (the image may be inconsistent)")
	retries := fs.Int("retries", 8, "give up after this many attempts in a row that send nothing")
	target := fs.String("target", protocol.FirstDisk, "with --mac: the machine's disk to capture: first (its first fixed, internal disk), or a device name such as sda or nvme0n1")
	wait := fs.Bool("wait", true, "with --mac: wait until the server publishes the image, showing progress")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	if *server == "" || *tokenFile == "" || *name == "" || (*disk == "" && *mac == "") {
		fs.Usage()
		return fmt.Errorf("%w: need --server, --token-file, --name and --disk (this machine's disk) or --mac (a machine that PXE-boots)", errUsage)
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("admin token: %w (copy <state_dir>/admin-token from the server)", err)
	}
	var client *http.Client
	if *fingerprint != "" {
		tc, err := pxe.PinnedTLS(*fingerprint)
		if err != nil {
			return fmt.Errorf("%w: --fingerprint: %v", errUsage, err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig, tr.ResponseHeaderTimeout = tc, 2*time.Minute
		client = &http.Client{Transport: tr}
	}
	log := fs.logger()
	pp := newLinePrinter("capture", *fs.progress)
	if *disk == "" {
		if *force {
			return fmt.Errorf("%w: --force is for --disk (a machine that PXE-boots has nothing mounted)", errUsage)
		}
		sel := protocol.Target{Disk: *target}
		if err := sel.Check(); err != nil {
			return fmt.Errorf("%w: --target: %v", errUsage, err)
		}
		return capturePXE(ctx, captureTask{server: *server, token: strings.TrimSpace(string(tok)), client: client,
			req: pxe.CreateTasks{Action: protocol.ActionCapture, MAC: *mac, Image: *name, Target: &sel, Raw: *raw}, wait: *wait, pp: pp})
	}
	res, err := capture.Config{Server: *server, Token: strings.TrimSpace(string(tok)), Name: *name, Disk: *disk, MAC: *mac,
		Options: capture.Options{Raw: *raw, Force: *force}, Retries: *retries, Progress: pp.show, HTTP: client}.Run(ctx, log)
	pp.done()
	if err != nil {
		return err
	}
	fmt.Printf("capture: published %s (info-hash %s): sent %s of the %s disk in %d extents, in %s\n",
		res.State.Image, res.State.InfoHash, bytesize.Format(res.Used), bytesize.Format(res.Size), res.Extents,
		res.Took.Round(time.Second/10))
	return nil
}

// captureTask is a PXE capture as `pxeswarm capture --mac` asks for it.
type captureTask struct {
	server, token string
	client        *http.Client
	req           pxe.CreateTasks
	wait          bool
	pp            *linePrinter
}

// capturePXE creates the capture task (POST /api/tasks, admin token) and
// waits for the image as the machine uploads it.
func capturePXE(ctx context.Context, c captureTask) error {
	hc := c.client
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	body, _ := json.Marshal(c.req)
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(c.server, "/")+"/api/tasks", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: --server: %v", errUsage, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("capture task: %w (is pxeswarm serve running at %s?)", err, c.server)
	}
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		var e struct{ Error string }
		if json.Unmarshal(out, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(out))
		}
		return fmt.Errorf("the server refused the capture task: %s: %s", resp.Status, e.Error)
	}
	var created pxe.CreatedTasks
	if err := json.Unmarshal(out, &created); err != nil || len(created.Tasks) != 1 {
		return fmt.Errorf("the server's answer to the capture task is not one task (%v): is it a pxeswarm server of this version?", err)
	}
	t := created.Tasks[0]
	fmt.Printf("capture: task %s created for %s (capture %s): PXE-boot the machine now (power it on or wake it); it uploads disk %s as %s, then reboots\n",
		t.ID, t.MAC, t.Capture, t.Target, t.Image)
	if !c.wait {
		fmt.Printf("capture: follow it with pxeswarm status, or GET /api/captures/%s\n", t.Capture)
		return nil
	}
	cl := &capture.Client{Server: c.server, HTTP: c.client, ID: t.Capture, Progress: c.pp.show}
	st, err := cl.Wait(ctx)
	c.pp.done()
	if err != nil {
		return fmt.Errorf("%w (the machine's own error is in pxeswarm status, task %s)", err, t.ID)
	}
	fmt.Printf("capture: published %s (info-hash %s): received %s from %s\n", st.Image, st.InfoHash, bytesize.Format(st.BytesIn), t.MAC)
	return nil
}

// linePrinter shows capture progress: a redrawn line on a terminal, a
// plain line every few seconds (and at state changes) otherwise.
type linePrinter struct {
	mu    sync.Mutex
	name  string
	tty   bool
	every time.Duration
	last  time.Time
	state string
	drawn bool
}

func newLinePrinter(name string, every time.Duration) *linePrinter {
	return &linePrinter{name: name, every: every, tty: isTerminal(os.Stdout)}
}

func (p *linePrinter) show(pr capture.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Printf("\r\033[K%s: %s", p.name, pr.Line())
		p.drawn = true
		return
	}
	now := time.Now()
	if string(pr.State) == p.state && now.Sub(p.last) < p.every {
		return
	}
	p.last, p.state = now, string(pr.State)
	fmt.Printf("%s: %s\n", p.name, pr.Line())
}

func (p *linePrinter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Println()
	}
}
