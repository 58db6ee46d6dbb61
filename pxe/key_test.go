package pxe

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/protocol"
)

func TestKeyIsKept(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Errorf("LoadOrCreateKey made a new key on the second start")
	}
	st, _ := os.Stat(filepath.Join(dir, "plan-key"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("plan-key mode = %v, want 0600", st.Mode().Perm())
	}
	pubData, _ := os.ReadFile(filepath.Join(dir, "plan-key.pub"))
	pub, err := protocol.ParsePublicKey(pubData)
	if err != nil || !pub.Equal(k1.Public()) {
		t.Errorf("plan-key.pub = %q (%v), want the key's public half", pubData, err)
	}
	os.WriteFile(filepath.Join(dir, "plan-key"), []byte("garbage"), 0o600)
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("LoadOrCreateKey(damaged) = %v, want a damaged-key error", err)
	}
}
