//go:build !linux

package coldplug

import (
	"errors"
	"io/fs"
)

var errExist error = fs.ErrExist

var errNotLinux = errors.New("coldplug: kernel modules are a Linux feature")

func finitModule(file, params string) error { return errNotLinux }

func release() (string, error) { return "", errNotLinux }
