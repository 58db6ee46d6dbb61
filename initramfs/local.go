package initramfs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Where the stick's partition GUID came from, as MarkStick says it.
const (
	FoundByEFI     = "efi"     // the boot loader's LoaderDevicePartUUID variable
	FoundByCmdline = "cmdline" // pxeswarm.stick= from the stick's boot entry
)

// findStick finds the rescue stick the machine booted from by the
// partition the boot loader was loaded from (the LoaderDevicePartUUID EFI
// variable systemd-boot sets, else pxeswarm.stick= from the stick's boot
// entry), never by guessing. That disk goes into the boot media, so it is
// never a target. It returns nil and ModeNetwork after a network boot.
func (a *agent) findStick(ctx context.Context) (*stick, string, error) {
	uuid, foundBy := "", ""
	if a.cfg.EFIVars != "-" {
		if a.cfg.EFIVars == partition.DefaultEFIVars {
			if err := mountEFIVars(a.cfg.EFIVars); err != nil {
				a.log.Warn("cannot mount efivarfs; the stick is found by its kernel command line", "dir", a.cfg.EFIVars, "err", err)
			}
		}
		u, err := partition.LoaderPartUUID(a.cfg.EFIVars)
		switch {
		case err == nil:
			uuid, foundBy = u, FoundByEFI
		case !errors.Is(err, partition.ErrNoLoaderPartUUID):
			a.log.Warn("cannot read the boot loader's partition", "err", err)
		}
	}
	if c := a.cmd.Stick; c != "" {
		switch {
		case uuid == "":
			uuid, foundBy = c, FoundByCmdline
		case uuid != c:
			a.log.Warn("the boot loader and the kernel command line name different boot partitions; following the boot loader",
				"loader", uuid, "cmdline", c)
		}
	}
	if uuid == "" {
		if a.cmd.Mode == ModeLocal {
			return nil, "", &Error{What: "pxeswarm.mode=local, but the agent cannot tell which stick it booted from", Err: ErrBadStick,
				Do: "boot the stick's own entry (its kernel command line carries pxeswarm.stick=), or rebuild the stick with pxeswarm build usb"}
		}
		return nil, ModeNetwork, nil
	}
	a.cfg.Disks.BootPartUUIDs = append(slices.Clone(a.cfg.Disks.BootPartUUIDs), uuid)
	a.log.Info("booted from a disk partition; its disk is never a target", "partuuid", uuid, "found_by", foundBy)

	// USB sticks show up a while after their controller's driver loads.
	st, err := a.waitStick(ctx, uuid)
	if err != nil {
		if a.cmd.Mode == ModeLocal {
			return nil, "", err
		}
		a.log.Warn("the boot partition's disk did not show up; going on with the network (it stays excluded)", "err", err)
		return nil, ModeNetwork, nil
	}
	data, err := readESPFile(st.esp.Path, StickFile, 1<<20)
	if err == nil {
		st.cfg, err = ParseStickConfig(data)
	}
	mode := a.cmd.Mode
	if st.cfg != nil {
		mode = cmp.Or(mode, st.cfg.Mode)
		if a.cmd.Server == "" && st.cfg.Server != "" {
			a.cmd.Server = strings.TrimRight(st.cfg.Server, "/")
		}
	}
	mode = cmp.Or(mode, ModeNetwork)
	a.con.Println(markStick(st, foundBy, mode))
	if err != nil {
		if mode == ModeLocal {
			return nil, "", &Error{What: "cannot read the rescue stick's config", Err: err, Do: "rebuild the stick with pxeswarm build usb"}
		}
		a.log.Warn("no rescue stick config; network mode", "err", err)
	}
	return st, mode, nil
}

// waitStick lists the disks until one has the partition uuid, or
// DiskTimeout.
func (a *agent) waitStick(ctx context.Context, uuid string) (*stick, error) {
	deadline := time.Now().Add(a.cfg.DiskTimeout)
	for {
		disks, err := a.cfg.Disks.List(a.log)
		if err == nil {
			for _, d := range disks {
				for _, p := range d.Partitions {
					if !strings.EqualFold(p.GUID, uuid) {
						continue
					}
					st := &stick{disk: d, esp: p}
					for _, q := range d.Partitions {
						if q.Label == StickDataLabel {
							st.data = &q
						}
					}
					if p.Path == "" {
						return nil, &Error{What: fmt.Sprintf("the kernel has no device for the stick's partition %d on %s", p.Number, d.Path), Err: ErrBadStick,
							Do: "the stick's partition table may be damaged: rewrite the stick"}
					}
					return st, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, &Error{What: "the disk holding the boot partition " + uuid + " did not show up", Err: ErrBadStick,
				Do: "check that the initramfs has the stick's USB drivers (usb-storage, xhci_pci), plug the stick into another port, and boot again"}
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// runLocal is the stick's local mode: write an image from the stick's
// data partition to this machine's disk, read it back, then seed it to
// the LAN if a tracker is known. Nothing is reported to a server (there
// may be none).
func (a *agent) runLocal(ctx context.Context, st *stick) (after string, err error) {
	cfg := st.cfg
	// Look for the network while the disk is written: the server, if
	// there is one, says where the tracker is.
	netCh := make(chan netResult, 1)
	netCtx, stopNet := context.WithCancel(ctx)
	defer stopNet()
	go func() {
		l, err := a.dhcp(netCtx, a.cfg.MAC)
		netCh <- netResult{l: l, err: err}
	}()

	// The image.
	idx := 0
	switch {
	case len(cfg.Images) == 1:
	case cfg.Default != "":
		idx = slices.IndexFunc(cfg.Images, func(im StickImage) bool { return im.Name == cfg.Default })
	default:
		items := make([]string, len(cfg.Images))
		for i, im := range cfg.Images {
			items[i] = fmt.Sprintf("%s (%s)", im.Name, bytesize.Format(im.Length))
		}
		if idx, err = a.choose(ctx, "which image to write", items); err != nil {
			return "", &Error{What: "no image chosen", Err: err, Do: "choose at the console, or rebuild the stick with --default NAME to run unattended"}
		}
	}
	si := cfg.Images[idx]
	if st.data == nil {
		return "", &Error{What: "the stick has no data partition (" + StickDataLabel + ")", Err: ErrBadStick, Do: "rebuild the stick with pxeswarm build usb --image"}
	}
	tb, err := readESPFile(st.esp.Path, si.Torrent, 64<<20)
	if err != nil {
		return "", &Error{What: "cannot read image " + si.Name + "'s torrent from the stick", Err: err, Do: "rebuild the stick with pxeswarm build usb"}
	}
	im, err := imager.Parse(tb)
	if err != nil {
		return "", &Error{What: "image " + si.Name + "'s torrent on the stick is damaged", Err: err, Do: "rebuild the stick with pxeswarm build usb"}
	}
	if !strings.EqualFold(im.InfoHash.HexString(), si.InfoHash) || im.Length != si.Length {
		return "", &Error{What: fmt.Sprintf("image %s's torrent on the stick is %s (%d bytes), the stick's config pins %s (%d bytes)",
			si.Name, im.InfoHash.HexString(), im.Length, strings.ToLower(si.InfoHash), si.Length), Err: ErrBadStick,
			Do: "nothing was written; rebuild the stick with pxeswarm build usb"}
	}
	a.con.Println(markPlan("stick", si.Name))
	a.log.Info("stick image", "image", im.String(), "target", fmt.Sprintf("%+v", si.Target), "create_table", si.CreateTable,
		"seed_for", si.seedFor(), "after", si.after())

	from, closeFrom, err := openStickImage(*st.data, si, im)
	if err != nil {
		return "", &Error{What: "cannot read image " + si.Name + " from the stick", Err: err, Do: "rebuild the stick with pxeswarm build usb"}
	}
	defer closeFrom.Close()

	_, err = a.write(ctx, job{
		im: im, from: "the stick", createTable: si.CreateTable, again: "boot the stick again",
		choose: func(ctx context.Context, disks []partition.Disk) (partition.Target, error) {
			return a.localTarget(ctx, disks, si, im)
		},
		fill: func(ctx context.Context, parts []imager.Part) error {
			err := imager.CopyConfig{Image: im, From: from, To: parts, Progress: a.onProgress, ProgressEvery: a.cfg.ProgressEvery}.Run(ctx)
			if err != nil {
				return &Error{What: "copying image " + si.Name + " from the stick failed", Err: err,
					Do: "the disk is half-written and will not be booted: if the stick is damaged, rewrite it; then boot it again"}
			}
			return nil
		},
		// Seed, where a tracker is known: the stick's list, the server's
		// tracker, else the torrent's own.
		seed: func(ctx context.Context, parts []imager.Part, _ string) error {
			if d := si.seedFor(); d > 0 {
				return a.seedLocal(ctx, netCh, si, im, parts, d)
			}
			return nil
		},
	})
	if err != nil {
		return "", err
	}
	stopNet()
	a.setPhase(protocol.PhaseDone)
	return si.after(), nil
}

// localTarget picks the disk for a stick image: the stick's target if it
// names one, else the one disk that can take the image, else the person
// at the console chooses among those that can.
func (a *agent) localTarget(ctx context.Context, disks []partition.Disk, si StickImage, im *imager.Image) (partition.Target, error) {
	if si.Target != (protocol.Target{}) {
		return chooseTarget(si.Target, im)(ctx, disks)
	}
	fit := partition.Candidates(disks, im)
	switch len(fit) {
	case 0:
		// What "first" would have said: no fixed disk, or it is too small.
		return chooseTarget(protocol.Target{Disk: protocol.FirstDisk}, im)(ctx, disks)
	case 1:
		return fit[0], nil
	}
	items := make([]string, len(fit))
	for i, t := range fit {
		items[i] = t.Disk.String()
	}
	i, err := a.choose(ctx, "which disk to write "+si.Name+" to (everything on it is replaced)", items)
	if err != nil {
		return partition.Target{}, &Error{What: "no disk chosen", Err: err, Do: "nothing was written; choose at the console, or rebuild the stick with --target DISK to run unattended"}
	}
	return fit[i], nil
}

// netResult is the network found while a stick image is written.
type netResult struct {
	l   *lease
	err error
}

// seedLocal seeds the written image for d where a tracker is known: the
// stick's own list, else the server's tracker (from DHCP's URL option or
// the baked-in server), else the torrent's announce URLs once the network
// is up. Without a network it does not seed.
func (a *agent) seedLocal(ctx context.Context, netCh <-chan netResult, si StickImage, im *imager.Image, parts []imager.Part, d time.Duration) error {
	var r netResult
	select {
	case r = <-netCh:
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.err != nil {
		a.log.Info("no network: not seeding", "err", r.err)
		return nil
	}
	go a.keepLease(ctx, r.l)
	server, from := a.serverFrom(r.l)
	if server != "" {
		a.con.Println(markLease(server, from, r.l.link.Attrs().Name, r.l.d.Addr.String()))
	}
	trackers := si.Trackers
	if len(trackers) == 0 && server != "" {
		trackers = []string{server + "/announce"}
	}
	if len(trackers) == 0 && len(im.Meta.UpvertedAnnounceList().DistinctValues()) == 0 {
		a.log.Info("no tracker known: not seeding")
		return nil
	}
	a.setPhase(protocol.PhaseSeeding)
	sess, err := imager.Config{Image: im, Parts: parts, Mode: imager.ModeSeed, Listen: a.cfg.Listen, Trackers: trackers,
		Tuning: a.cfg.Tuning, Progress: a.onProgress, ProgressEvery: a.cfg.ProgressEvery}.Join(ctx, a.log)
	if err != nil {
		a.log.Warn("cannot seed the written image; going on", "err", err)
		return nil
	}
	defer sess.Close()
	a.log.Info("seeding the written image", "trackers", trackers, "for", d, "listen", sess.ListenAddr())
	a.con.Println(markSeeding(d.String()))
	if err := sess.Seed(ctx, d); err != nil && ctx.Err() != nil {
		return &Error{What: "stopped while seeding", Err: ctx.Err(), Do: "the image is complete on the disk; reboot by hand"}
	}
	p := sess.Progress()
	a.log.Info("seeding done", "uploaded", bytesize.Format(p.Uploaded))
	return sess.Close()
}
