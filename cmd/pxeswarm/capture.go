package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/capture"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/pxe"
)

func runCapture(ctx context.Context, args []string) error {
	fs := newFlagSet("capture", "--server URL --token-file FILE --name NAME --disk /dev/X [flags]", `
Capture a golden disk into a new image on the boot server, from any Linux
machine that reaches it: the disk's partition table (GPT or MBR, or none)
is recorded, and of each partition whose filesystem pxeswarm reads (ext2/3/4,
FAT, NTFS, swap) only the used blocks are sent; other partitions are sent
whole. The server checks that it has room before anything is sent, hashes
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

Example:
  pxeswarm capture --server https://198.18.0.1:8443 --fingerprint AB:CD:… \
      --token-file /var/lib/pxeswarm/admin-token --name win11 --disk /dev/sda`)
	fs.section("capture")
	server := fs.String("server", "", "the boot server's URL; its admin URL (https://…) when it serves the admin API over HTTPS (required)")
	tokenFile := fs.String("token-file", "", "file holding the server's admin token (<state_dir>/admin-token on the server) (required)")
	name := fs.String("name", "", "image name: letters, digits, '.', '_', '-' (required)")
	disk := fs.String("disk", "", "the golden disk: /dev/sda, a partition, or an image file (required)")
	fingerprint := fs.String("fingerprint", "", "with an https:// --server: trust exactly the certificate of this SHA-256 fingerprint (pxeswarm serve logs it as https_fingerprint=)")
	mac := fs.String("mac", "", "MAC of the captured machine, shown in the server's status (optional)")
	raw := fs.Bool("raw", false, "send every byte of every partition, without reading used blocks (BitLocker, unknown filesystems)")
	force := fs.Bool("force", false, "capture even if a partition is mounted read-write (the image may be inconsistent)")
	retries := fs.Int("retries", 8, "give up after this many attempts in a row that send nothing")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	if *server == "" || *tokenFile == "" || *name == "" || *disk == "" {
		fs.Usage()
		return fmt.Errorf("%w: need --server, --token-file, --name and --disk", errUsage)
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
