//go:build !linux

package capture

import (
	"errors"
	"os"
)

func rwMounts(*os.File) ([]string, error) {
	return nil, errors.New("capture reads block devices on Linux only: capture an image file")
}
