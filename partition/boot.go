package partition

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// DefaultEFIVars is where efivarfs is mounted.
const DefaultEFIVars = "/sys/firmware/efi/efivars"

// loaderDevicePartUUID is the EFI variable systemd-boot (and other boot
// loaders following the Boot Loader Interface) sets to the PARTUUID of the
// partition it was loaded from.
const loaderDevicePartUUID = "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// ErrNoLoaderPartUUID: the boot loader did not say where it was loaded
// from (not UEFI, efivarfs not mounted, or a loader without the Boot
// Loader Interface).
var ErrNoLoaderPartUUID = errors.New("the boot loader did not record the partition it was loaded from")

// LoaderPartUUID reads the PARTUUID of the partition the boot loader was
// loaded from, in lower case, from the LoaderDevicePartUUID EFI variable
// under efivars (DefaultEFIVars if empty). That partition's disk is the
// boot medium: put the result in Config.BootPartUUIDs.
func LoaderPartUUID(efivars string) (string, error) {
	if efivars == "" {
		efivars = DefaultEFIVars
	}
	b, err := os.ReadFile(filepath.Join(efivars, loaderDevicePartUUID))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: no %s in %s", ErrNoLoaderPartUUID, loaderDevicePartUUID, efivars)
	}
	if err != nil {
		return "", err
	}
	return parseLoaderPartUUID(b)
}

// parseLoaderPartUUID decodes the variable: 4 bytes of attributes, then a
// NUL-terminated UTF-16LE GUID string.
func parseLoaderPartUUID(b []byte) (string, error) {
	if len(b) < 4 || (len(b)-4)%2 != 0 {
		return "", fmt.Errorf("%w: %s has %d bytes, not attributes and UTF-16 text", ErrNoLoaderPartUUID, loaderDevicePartUUID, len(b))
	}
	u := make([]uint16, 0, (len(b)-4)/2)
	for i := 4; i+1 < len(b); i += 2 {
		c := uint16(b[i]) | uint16(b[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	s := strings.ToLower(string(utf16.Decode(u)))
	if !protocol.IsGUID(s) {
		return "", fmt.Errorf("%w: %s holds %q, not a GUID", ErrNoLoaderPartUUID, loaderDevicePartUUID, s)
	}
	return s, nil
}
