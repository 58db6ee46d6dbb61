// Package partition is the agent's disk room: it finds the machine's disks,
// recognises the medium the agent booted from, picks the target a plan
// names, checks that it is large enough, and makes the partition table an
// image's layout asks for.
//
// It owns:
//   - disk discovery from sysfs ([Config.List]): size, removable,
//     rotational, read-only, model and serial, the partitions (from the
//     on-disk table, read with go-diskfs, merged with the kernel's view),
//     filesystem labels, the boot medium and disks that are mounted or held;
//   - target selection ([Choose]) with the safety rules: never the boot
//     medium, never a read-only or busy disk, never a target smaller than
//     the image;
//   - partition tables ([ReadTable], [PlanTable], [WriteTable],
//     [Config.CreateTable]): GPT and MBR, laid out exactly as the image's
//     [imager.Layout] says, then re-read by the kernel;
//   - where each image file goes ([Map], [Place]) and how the imager opens
//     it ([Paths], [OpenParts]);
//   - the block-device ioctls (BLKGETSIZE64, BLKSSZGET, BLKRRPART, BLKPG,
//     BLKDISCARD, BLKZEROOUT) and hole punching, in package blockdev: the
//     zeroing and discarding of a used-block image's gaps
//     (imager.FinishGaps decides which, blockdev.Region does it, reached
//     through the parts OpenParts opens).
//
// Table logic works on plain io.ReaderAt/io.WriterAt, so it is tested on
// files; fake sysfs trees (package partitiontest) stand in
// for a machine's disks.
//
// It does not own what is written into the partitions (package imager),
// the plan that names the target (package protocol: [Choose] takes its
// protocol.Target and the rules that Target.Check sets), or the agent's
// state machine (package initramfs).
package partition
