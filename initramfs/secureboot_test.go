package initramfs

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReadSecureBoot reads the SecureBoot variable as efivarfs shows it
// (attributes, then the byte), as OVMF sets it with and without Secure
// Boot, and refuses what is not that.
func TestReadSecureBoot(t *testing.T) {
	attrs := []byte{0x06, 0, 0, 0} // BOOTSERVICE_ACCESS | RUNTIME_ACCESS
	for _, tc := range []struct {
		name    string
		data    []byte // nil: no variable
		want    string
		wantErr bool
	}{
		{"on", append(attrs, 1), SecureBootOn, false},
		{"off", append(attrs, 0), SecureBootOff, false},
		{"no variable", nil, SecureBootNone, false},
		{"short", attrs, "", true},
		{"odd value", append(attrs, 2), "", true},
	} {
		dir := t.TempDir()
		if tc.data != nil {
			os.WriteFile(filepath.Join(dir, secureBootVar), tc.data, 0o644)
		}
		got, err := ReadSecureBoot(dir)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: ReadSecureBoot = %q, %v; want %q, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	lock := filepath.Join(t.TempDir(), "lockdown")
	os.WriteFile(lock, []byte("none [integrity] confidentiality\n"), 0o644)
	if got := readLockdown(lock); got != "integrity" {
		t.Errorf("readLockdown = %q, want integrity", got)
	}
}
