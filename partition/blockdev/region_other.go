//go:build !linux

package blockdev

import (
	"fmt"
	"os"
)

var errNotSupported = fmt.Errorf("not supported: %w", errLinuxOnly)

func zeroOut(*os.File, int64, int64) error      { return errNotSupported }
func discardRange(*os.File, int64, int64) error { return errNotSupported }
func punchHole(*os.File, int64, int64) error    { return errNotSupported }
func discardMax(*os.File) (int64, error)        { return 0, errLinuxOnly }
