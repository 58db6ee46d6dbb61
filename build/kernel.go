package build

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNoKernel means no kernel was given and none was found in /boot.
var ErrNoKernel = errors.New("no kernel found")

// ErrNotBzImage means the kernel file is not an x86 bzImage.
var ErrNotBzImage = errors.New("not an x86 Linux kernel (bzImage)")

// NewestKernel returns the newest /boot/vmlinuz-* (Debian's
// linux-image-amd64), comparing versions the way dpkg orders them for the
// usual "6.1.0-56-amd64" shape: number by number.
func NewestKernel(boot string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	if len(m) == 0 {
		return "", fmt.Errorf("%w in %s: install Debian's linux-image-amd64 package, or give a kernel with --kernel", ErrNoKernel, boot)
	}
	sort.Slice(m, func(i, j int) bool {
		return versionLess(strings.TrimPrefix(filepath.Base(m[i]), "vmlinuz-"), strings.TrimPrefix(filepath.Base(m[j]), "vmlinuz-"))
	})
	return m[len(m)-1], nil
}

// versionLess compares dotted/dashed versions with runs of digits compared
// as numbers ("6.1.0-9" < "6.1.0-10").
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		if isDigit(a[0]) && isDigit(b[0]) {
			i, j := digits(a), digits(b)
			na, nb := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			a, b = a[i:], b[j:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// digits is the length of the run of digits at the start of s.
func digits(s string) int {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i
}

// kernelVersion reads the release string ("6.1.0-56-amd64") from an x86
// bzImage. The setup header (Documentation/arch/x86/boot.rst) holds "HdrS"
// at 0x202, the boot protocol version at 0x206 and, from protocol 2.00
// on, at 0x20E a pointer (minus 0x200) to a NUL-terminated string whose
// first word is the release.
func kernelVersion(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return "", fmt.Errorf("kernel %s: %w: %v", file, ErrNotBzImage, err)
	}
	if string(hdr[0x202:0x206]) != "HdrS" || binary.LittleEndian.Uint16(hdr[0x206:]) < 0x200 {
		return "", fmt.Errorf("kernel %s: %w: no boot-protocol header", file, ErrNotBzImage)
	}
	off := int64(binary.LittleEndian.Uint16(hdr[0x20E:])) + 0x200
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, off)
	s := buf[:n]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	fields := strings.Fields(string(s))
	if len(fields) == 0 {
		return "", fmt.Errorf("kernel %s: %w: empty version string", file, ErrNotBzImage)
	}
	return fields[0], nil
}
