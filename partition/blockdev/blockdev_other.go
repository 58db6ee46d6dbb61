//go:build !linux

package blockdev

import (
	"errors"
	"os"
	"syscall"
)

var errLinuxOnly = errors.New("block devices are supported on Linux only: use an image file")

func Geometry(*os.File) (int64, int, error)          { return 0, 0, errLinuxOnly }
func RereadTable(*os.File) error                     { return errLinuxOnly }
func AddPartition(*os.File, int, int64, int64) error { return errLinuxOnly }
func DeletePartition(*os.File, int) error            { return errLinuxOnly }
func Discard(*os.File, int64, int64) error           { return errLinuxOnly }
func DevNumber(os.FileInfo) (string, error)          { return "", errLinuxOnly }
func OpenExclusive(path string) (*os.File, error)    { return nil, errLinuxOnly }

var ErrBusy = syscall.EBUSY

func PartitionOf(*os.File) (int, int64)      { return 0, 0 }
func DropCache(*os.File, int64, int64) error { return nil }
func RereadTablePath(string) error           { return nil }
