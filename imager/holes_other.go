//go:build !linux

package imager

import (
	"errors"
	"os"
)

func seekData(_ *os.File, off, _ int64) (int64, error) { return off, nil }

func seekHole(_ *os.File, _, end int64) (int64, error) { return end, nil }

var errNoPunch = errors.New("punching holes needs Linux (fallocate PUNCH_HOLE): leave out --sparse")

func punchHole(*os.File, int64, int64) error { return errNoPunch }

func allocated(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
