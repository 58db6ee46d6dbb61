//go:build !linux

package partition

import (
	"errors"
	"os"
	"syscall"
)

var errLinuxOnly = errors.New("block devices are supported on Linux only: use an image file")

func geometry(*os.File) (int64, int, error)          { return 0, 0, errLinuxOnly }
func rereadTable(*os.File) error                     { return errLinuxOnly }
func addPartition(*os.File, int, int64, int64) error { return errLinuxOnly }
func deletePartition(*os.File, int) error            { return errLinuxOnly }
func discard(*os.File, int64, int64) error           { return errLinuxOnly }
func devNumber(os.FileInfo) (string, error)          { return "", errLinuxOnly }
func openExclusive(path string) (*os.File, error)    { return nil, errLinuxOnly }

var errBusy = syscall.EBUSY
