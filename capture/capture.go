package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Config is one capture from start to publish, as `pxeswarm capture`
// runs it.
type Config struct {
	// Server is the server's base URL (the admin URL when it serves the
	// admin API over HTTPS only).
	Server string
	// Token is the server's admin token (POST /api/captures needs it).
	Token string
	// Name is the image name; capturing a name that exists makes a new
	// version (name-v2, ...) and keeps the old one.
	Name string
	// Disk is the golden disk: a whole disk, a partition or an image file.
	Disk string
	// MAC, if known, names the captured machine in the server's status.
	MAC string
	Options
	// HTTP is the HTTP client (nil: see Client.HTTP).
	HTTP *http.Client
	// Retries and Backoff: see Client.
	Retries int
	Backoff time.Duration
	// Progress, if set, is called while sending and while the server
	// hashes.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// Result is what a capture made.
type Result struct {
	State   protocol.CaptureState // as published: Image, InfoHash
	Used    int64                 // bytes sent: the stream's length
	Size    int64                 // the disk's size
	Extents int                   // extents sent, all parts
	Took    time.Duration
}

// Run reads the disk (refusing what cannot be captured consistently
// before the server is asked anything), creates the capture, sends the
// manifest (the server refuses it when it has no room), streams the used
// bytes with resume, and waits until the server published the image. A
// capture that fails after it was created is canceled, so the server
// drops what it staged.
func (c Config) Run(ctx context.Context, log *slog.Logger) (Result, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	src, err := Open(c.Disk, c.Options, log)
	if err != nil {
		return Result{}, err
	}
	defer src.Close()
	res := Result{Used: src.Total(), Size: src.Manifest.DiskSize}
	for _, p := range src.Manifest.Parts {
		res.Extents += max(1, len(p.Extents))
	}
	log.Info("capture: disk read", "disk", c.Disk, "table", src.Manifest.Table, "parts", len(src.Manifest.Parts),
		"send", bytesize.Format(src.Total()), "of", bytesize.Format(src.Manifest.DiskSize), "extents", res.Extents)
	cl := &Client{Server: c.Server, HTTP: c.HTTP, Retries: c.Retries, Backoff: c.Backoff, Progress: c.Progress,
		ProgressEvery: c.ProgressEvery, Log: log}
	created, err := cl.Create(ctx, c.Token, protocol.NewCapture{Name: c.Name, MAC: c.MAC, Disk: c.Disk})
	if err != nil {
		return res, err
	}
	log.Info("capture: created", "capture", created.ID, "name", c.Name)
	fail := func(err error) (Result, error) {
		// Drop what the server staged, unless it failed already.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if cerr := cl.Cancel(cctx, c.Token); cerr != nil && !errors.Is(cerr, ErrServer) {
			log.Warn("capture: could not cancel the capture on the server; it expires by itself", "capture", cl.ID, "err", cerr)
		}
		return res, fmt.Errorf("capture %s of %s: %w", cl.ID, c.Disk, err)
	}
	if _, err := cl.SendManifest(ctx, &src.Manifest); err != nil {
		return fail(err)
	}
	if err := cl.Upload(ctx, src, src.Total()); err != nil {
		return fail(err)
	}
	st, err := cl.Finish(ctx)
	if err != nil {
		return res, fmt.Errorf("capture %s of %s: %w", cl.ID, c.Disk, err)
	}
	res.State, res.Took = st, time.Since(start)
	return res, nil
}
