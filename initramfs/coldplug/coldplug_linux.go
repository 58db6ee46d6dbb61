package coldplug

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// errExist is what finit_module returns for a module already loaded.
var errExist error = unix.EEXIST

// finitModule loads a module file with finit_module(2). The file must be
// uncompressed: build/ decompresses modules when it packs them (a 6.1
// kernel has no MODULE_INIT_COMPRESSED_FILE).
func finitModule(file, params string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return fmt.Errorf("finit_module %s: %w", file, err)
	}
	return nil
}

// release is uname -r.
func release() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return strings.TrimRight(string(u.Release[:]), "\x00"), nil
}
