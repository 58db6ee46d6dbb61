package pxe

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzTFTPName: whatever name a TFTP client asks for, openUnder serves
// only regular files inside the root (or the root's own symlinks to
// regular files), never anything beside it.
func FuzzTFTPName(f *testing.F) {
	dir := f.TempDir()
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(root, "ipxe.efi"), []byte("inside"), 0o644)
	os.Mkdir(filepath.Join(root, "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "sub", "x.kpxe"), []byte("inside"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("outside"), 0o600)
	os.Symlink(filepath.Join(dir, "secret"), filepath.Join(root, "sub", "escape"))
	r, err := os.OpenRoot(root)
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	links := rootLinks(root)
	for _, s := range []string{"ipxe.efi", "/ipxe.efi", `\sub\x.kpxe`, "../secret", "sub/escape", "sub/../../secret", "//ipxe.efi", "sub", "", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		fh, st, err := openUnder(r, links, name)
		if err != nil {
			return
		}
		defer fh.Close()
		b, _ := io.ReadAll(fh)
		if string(b) != "inside" || !st.Mode().IsRegular() {
			t.Fatalf("openUnder(%q) served %q (mode %v), want only files inside the root", name, b, st.Mode())
		}
	})
}
