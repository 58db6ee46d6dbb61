//go:build !linux

package imager

import (
	"errors"
	"os"
)

func blockSize(*os.File) (int64, error) {
	return 0, errors.New("block devices are supported on Linux only: use an image file")
}

func partitionOf(*Device) (int, int64) { return 0, 0 }

func setNotSentLowat(uintptr) {}
