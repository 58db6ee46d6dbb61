package partition_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"

	. "github.com/pxeswarm/pxeswarm/partition"
)

// efiVar encodes s as efivarfs shows a variable: attributes, then
// NUL-terminated UTF-16LE.
func efiVar(s string) []byte {
	b := []byte{7, 0, 0, 0}
	for _, c := range utf16.Encode([]rune(s)) {
		b = append(b, byte(c), byte(c>>8))
	}
	return append(b, 0, 0)
}

func TestLoaderPartUUID(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoaderPartUUID(dir); !errors.Is(err, ErrNoLoaderPartUUID) {
		t.Errorf("LoaderPartUUID(no variable) = %v, want ErrNoLoaderPartUUID", err)
	}
	const guid = "1C5E2D4F-9A0B-4C3D-8E7F-0123456789AB"
	if err := os.WriteFile(filepath.Join(dir, LoaderDevicePartUUID), efiVar(guid), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoaderPartUUID(dir)
	if err != nil || got != "1c5e2d4f-9a0b-4c3d-8e7f-0123456789ab" {
		t.Errorf("LoaderPartUUID = %q, %v, want the GUID in lower case", got, err)
	}
	for name, b := range map[string][]byte{
		"short":    {7, 0},
		"odd":      {7, 0, 0, 0, 'a'},
		"not guid": efiVar("hello"),
		"empty":    efiVar(""),
	} {
		if got, err := ParseLoaderPartUUID(b); !errors.Is(err, ErrNoLoaderPartUUID) {
			t.Errorf("ParseLoaderPartUUID(%s) = %q, %v, want ErrNoLoaderPartUUID", name, got, err)
		}
	}
}
