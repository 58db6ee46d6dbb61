// Package blockdev is every block-device system call pxeswarm makes, in
// one place: sizes (BLKGETSIZE64, BLKSSZGET), exclusive opens (O_EXCL),
// the kernel's view of a partition table (BLKRRPART, BLKPG), discards
// (BLKDISCARD, where the disk's queue allows) and zeroing (BLKZEROOUT;
// punched holes in files) of byte ranges of a partition ([Region]),
// page-cache drops and the sysfs facts of a partition. The
// Linux calls are in blockdev_linux.go; elsewhere they fail with a clear
// error.
//
// It is the partition room's floor: package partition builds disks and
// tables on it, package imager sizes and opens its sources and targets
// with it, and the agent reads images back through it. It knows nothing
// of images, tables or plans.
package blockdev
