package qemu

import (
	"fmt"
	"path/filepath"
	"sort"
)

// DebianKernel returns the newest /boot/vmlinuz-* (Debian's
// linux-image-amd64), the kernel the tests and the classroom boot.
func DebianKernel() (string, error) {
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(m) == 0 {
		return "", fmt.Errorf("no /boot/vmlinuz-*: install Debian's linux-image-amd64 package (make deps does)")
	}
	sort.Strings(m)
	return m[len(m)-1], nil
}
