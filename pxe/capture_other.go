//go:build !linux

package pxe

import "errors"

func freeSpace(string) (int64, error) {
	return 0, errors.New("captures need Linux (statfs)")
}
