package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	for _, data := range []string{"first", "second, longer than the first"} {
		if err := Write(p, []byte(data), 0o640); err != nil {
			t.Fatalf("Write(%q) = %v", data, err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Errorf("after Write(%q) the file holds %q, %v", data, got, err)
		}
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("folder holds %d entries, want only the file (no temporary left)", len(ents))
	}
	if err := Write(filepath.Join(dir, "no-such-folder", "x"), nil, 0o600); err == nil {
		t.Error("Write into a missing folder = nil, want an error")
	}
}
