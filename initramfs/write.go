package initramfs

import (
	"context"
	"fmt"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// A job is one image to write to this machine. The network path (a
// signed plan, the swarm) and the rescue stick's local mode (an image on
// the stick) differ only in what a job says; [agent.write] is the one
// write sequence both run.
type job struct {
	im *imager.Image
	// from says whose settings these are, for messages: "the plan" or
	// "the stick".
	from string
	// choose picks the target among the machine's disks; its error is
	// shown as is.
	choose func(ctx context.Context, disks []partition.Disk) (partition.Target, error)
	// createTable makes the partition table of the image's layout on the
	// target disk before writing.
	createTable bool
	// discard discards the free gaps of used-block parts where the disk
	// can (imager.FinishGaps); zero gaps are zeroed either way.
	discard bool
	// fill writes the image into parts, every piece checked before it is
	// written: the swarm, or a copy from the stick.
	fill func(ctx context.Context, parts []imager.Part) error
	// seed, if set, runs once the image is on the disk and read back, and
	// before the target is closed: it may go on serving the written parts.
	seed func(ctx context.Context, parts []imager.Part, digest string) error
	// again says how to start over after a failure: "reboot to try
	// again", "boot the stick again".
	again string
}

// write is the agent's one write sequence: wait for the disks, choose the
// target, make the partition table (or map the image onto the table the
// disk has), open the partitions, fill them, flush, read the image back,
// seed, close, and let the kernel re-read a table the image brought. It
// returns the SHA-256 of the image read back ("" when the read-back is
// off).
//
// Nothing is written before the target passed every check; after that,
// an error says the disk is half-written and is never followed by a
// reboot into it (the caller stops at [agent.fail]).
func (a *agent) write(ctx context.Context, j job) (digest string, err error) {
	im := j.im
	a.setPhase(protocol.PhaseDisk)
	a.report(ctx, "")
	// A server that ends the task under the agent is the reason for
	// whatever fails after that.
	stopped := func(err error, written bool) error {
		if e := a.ended(written); e != nil {
			return e
		}
		return err
	}
	disks, err := a.waitDisks(ctx)
	if err != nil {
		return "", stopped(err, false)
	}
	for _, d := range disks {
		a.con.Println(markDisk(d))
	}
	tgt, err := j.choose(ctx, disks)
	if err != nil {
		return "", stopped(err, false)
	}
	a.con.Println(markTarget(tgt.String(), tgt.Size()))

	var places []partition.Place
	if j.createTable {
		if tgt.Part != nil {
			return "", &Error{What: fmt.Sprintf("%s asks for a new partition table but targets %s, a partition", j.from, tgt),
				Do: "nothing was written; target a whole disk, or write this image without a new partition table"}
		}
		places, err = a.cfg.Disks.CreateTable(ctx, a.log, tgt.Disk, im)
		if err != nil {
			return "", stopped(&Error{What: "cannot make the partition table on " + tgt.Disk.Path, Err: err, Do: diskAdvice(err)}, true)
		}
		a.con.Println(markTable(im.Layout.Table, tgt.Disk.Path, len(places)))
	} else if places, err = partition.Map(tgt, im); err != nil {
		return "", &Error{What: "the image does not fit " + tgt.String(), Err: err, Do: diskAdvice(err)}
	}
	for _, p := range places {
		a.log.Info("image part goes to", "place", p.String())
	}
	parts, closeParts, err := partition.OpenParts(places)
	if err != nil {
		return "", &Error{What: "cannot open the target for writing", Err: err, Do: diskAdvice(err)}
	}
	defer closeParts() // safe to call again after the explicit close below

	a.con.Println(markWriting(im.Name, im.Length, tgt.String()))
	a.setPhase(protocol.PhaseImaging)
	a.report(ctx, "")
	if err := j.fill(ctx, parts); err != nil {
		if _, ok := err.(*Error); !ok {
			err = &Error{What: "writing image " + im.Name + " failed", Err: err,
				Do: "the disk is half-written and will not be booted: check the disk and the log above, then " + j.again}
		}
		return "", stopped(err, true)
	}
	syncAll()
	if err := a.finishGaps(ctx, im, parts, j.discard); err != nil {
		return "", stopped(&Error{What: "the gaps between the extents of image " + im.Name + " on " + tgt.String() + " could not be zeroed", Err: err,
			Do: "the disk is half-written (every piece is there, the zeros between them are not) and will not be booted: check the disk, or pick another, then " + j.again}, true)
	}

	if a.readBack {
		a.setPhase(protocol.PhaseVerifying)
		start := time.Now()
		a.setReadBack(0, im.Length, start)
		a.report(ctx, "reading the image back")
		digest, err = readBack(ctx, parts, im, func(done int64) { a.setReadBack(done, im.Length, start) })
		if err == nil {
			err = imager.CheckZeroGaps(ctx, im, parts)
		}
		if err != nil {
			return "", stopped(&Error{What: "the image does not read back from " + tgt.String() + " as it was written", Err: err,
				Do: "the disk (or its cable or controller) may be failing: check it, or pick another disk, then " + j.again}, true)
		}
		a.log.Info("image read back", "sha256", digest, "took", time.Since(start).Round(time.Millisecond))
	}
	a.con.Println(markImageDone(digest, im.InfoHash.HexString(), im.Length))

	if j.seed != nil {
		if err := j.seed(ctx, parts, digest); err != nil {
			return "", err
		}
	}
	if err := closeParts(); err != nil {
		return "", &Error{What: "flushing the image to " + tgt.String() + " failed", Err: err, Do: "check the disk, then " + j.again}
	}
	syncAll()
	if wholeDiskImage(tgt, im) {
		// The image brought its own partition table: let the kernel see
		// it (a shell after-action, or the next task, wants the nodes).
		// After CreateTable the kernel already has the right partitions,
		// some added by BLKPG on kernels without the table's parser, and
		// a BLKRRPART there would drop them.
		if err := blockdev.RereadTablePath(tgt.Disk.Path); err != nil {
			a.log.Warn("the kernel did not re-read the partition table (the next boot will)", "disk", tgt.Disk.Path, "err", err)
		} else {
			a.log.Info("the kernel re-read the partition table", "disk", tgt.Disk.Path)
		}
	}
	a.log.Info("target closed", "image", im.Name, "size", bytesize.Format(im.Length), "target", tgt.String())
	return digest, nil
}

// finishGaps zeroes the gaps of im's GapsZero parts and, with discard,
// discards the free gaps of its GapsFree parts (imager.FinishGaps), with
// the progress on the console, then flushes the disk. The image's pieces
// are on the disk and flushed by then.
func (a *agent) finishGaps(ctx context.Context, im *imager.Image, parts []imager.Part, discard bool) error {
	start := time.Now()
	err := imager.FinishGaps(ctx, a.log, im, parts, discard, func(done, total int64) { a.setStep(imager.StateGaps, done, total, start) })
	a.mu.Lock()
	a.rb, a.rbAt = imager.Progress{}, 0
	a.mu.Unlock()
	if err != nil {
		return err
	}
	syncAll()
	return nil
}

// wholeDiskImage reports whether im is one whole-disk image written to
// the whole of tgt's disk: then the disk's partition table is the image's.
func wholeDiskImage(tgt partition.Target, im *imager.Image) bool {
	return tgt.Part == nil && len(im.Files) == 1 && im.Files[0].Part.Number == 0
}

// chooseTarget is a job's choose for a fixed target: the plan's, or the
// stick's when it names one.
func chooseTarget(sel protocol.Target, im *imager.Image) func(context.Context, []partition.Disk) (partition.Target, error) {
	return func(_ context.Context, disks []partition.Disk) (partition.Target, error) {
		t, err := partition.Choose(disks, sel, im)
		if err != nil {
			return t, &Error{What: "no disk to write the image to", Err: err, Do: diskAdvice(err)}
		}
		return t, nil
	}
}
