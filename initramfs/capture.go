package initramfs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pxeswarm/pxeswarm/capture"
	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// stateUploading is a capture's progress state on the console.
const stateUploading imager.State = "uploading"

// capture carries out a capture plan: the disk the plan's target names is
// opened read-only (package capture refuses what cannot be captured
// consistently), its used bytes go to the server's capture with the
// plan's secret, and the task is reported done once the server has
// published the image. Nothing is written to any disk.
func (a *agent) capture(ctx context.Context, plan *protocol.Plan, server string) error {
	c := a.cfg
	capCtx, stop := context.WithCancel(ctx)
	defer stop()
	go a.rep.every(capCtx, c.ReportEvery, a.current)
	go func() {
		select {
		case <-a.rep.Ended():
			stop()
		case <-capCtx.Done():
		}
	}()
	stopped := func(err error) error {
		if e := a.ended(false); e != nil {
			return e
		}
		return err
	}

	a.setPhase(protocol.PhaseDisk)
	a.report(ctx, "")
	disks, err := a.waitDisks(capCtx)
	if err != nil {
		return stopped(err)
	}
	for _, d := range disks {
		a.con.Println(markDisk(d))
	}
	tgt, err := partition.Choose(disks, plan.Target, nil)
	if err != nil {
		return stopped(&Error{What: "no disk to capture", Err: err, Do: captureDiskAdvice(err)})
	}
	path := tgt.Disk.Path
	if tgt.Part != nil {
		path = tgt.Part.Path
	}
	src, err := capture.Open(path, capture.Options{Raw: plan.Raw}, a.log)
	if err != nil {
		return stopped(&Error{What: "cannot capture " + path, Err: err,
			Do: "nothing was sent and the disk was not written; do what the message says, or capture with raw (POST /api/tasks with \"raw\": true) to send every byte"})
	}
	defer src.Close()
	a.con.Println(markCapturing(path, src.Manifest.Table, len(src.Manifest.Parts), src.Total(), src.Manifest.DiskSize))

	a.setPhase(protocol.PhaseCapturing)
	a.report(ctx, fmt.Sprintf("capturing %s: %s of %s", path, bytesize.Format(src.Total()), bytesize.Format(src.Manifest.DiskSize)))
	// Uploads are long: the plan's client has an overall timeout, this
	// one bounds dials and answers only (package capture's Client).
	var hc *http.Client
	if c.HTTP != nil && c.HTTP.Transport != nil {
		hc = &http.Client{Transport: c.HTTP.Transport}
	}
	start := time.Now()
	cl := &capture.Client{Server: server, HTTP: hc, ID: plan.CaptureID, Secret: plan.ReportToken, Log: a.log,
		Progress: a.onCaptureProgress, ProgressEvery: c.ProgressEvery}
	fail := func(what string, err error) error {
		do := "the golden disk was not written; reboot to resume the capture, or check the server's log"
		if errors.Is(err, capture.ErrServer) {
			do = "the golden disk was not written; the server refused the capture for good (see the message): fix that, then cancel the task and create a new capture"
		}
		return stopped(&Error{What: what, Err: err, Network: isNetErr(err), Do: do})
	}
	if _, err := cl.SendManifest(capCtx, &src.Manifest); err != nil {
		return fail("the server did not take the capture's manifest", err)
	}
	if err := cl.Upload(capCtx, src, src.Total()); err != nil {
		return fail("sending the disk to the server failed", err)
	}
	st, err := cl.Finish(capCtx)
	if err != nil {
		return fail("the server did not publish the capture", err)
	}
	a.con.Println(markCaptureDone(st.Image, st.InfoHash, src.Total(), time.Since(start)))
	a.log.Info("capture published", "image", st.Image, "infohash", st.InfoHash, "sent", bytesize.Format(src.Total()), "took", time.Since(start).Round(time.Second))
	stop()
	a.setPhase(protocol.PhaseDone)
	if err := a.report(ctx, "image="+st.Image+" infohash="+st.InfoHash); err != nil && !errors.Is(err, ErrTaskEnded) {
		a.log.Warn("the done report did not reach the server; the image is published", "err", err)
	}
	return nil
}

// onCaptureProgress is the upload's progress callback.
func (a *agent) onCaptureProgress(p capture.Progress) {
	ip := imager.Progress{State: stateUploading, Done: p.Sent, Total: p.Total, Rate: p.Rate, Took: p.Elapsed}
	if p.State == protocol.CaptureHashing || p.State == protocol.CapturePublished {
		ip.State = imager.State("server-" + string(p.State))
	}
	a.mu.Lock()
	a.prog = ip
	a.mu.Unlock()
	a.con.Progress(ip)
}

// captureDiskAdvice says what to do when the capture's disk is not found.
func captureDiskAdvice(err error) string {
	switch {
	case errors.Is(err, partition.ErrBootMedium):
		return "nothing was sent; the agent never captures the medium it booted from: name the golden disk in the task's target"
	case errors.Is(err, partition.ErrAmbiguous):
		return "nothing was sent; name the disk in the task's target so only one partition matches"
	case errors.Is(err, partition.ErrNoTarget):
		return "nothing was sent; check that the disk's driver is in the initramfs and that the task's target names a disk this machine has (see the disk lines above)"
	}
	return "nothing was sent; check the disk and the log above, then reboot to try again"
}
