package pxe

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// LoadOrCreateKey reads the server's ed25519 key from dir/plan-key, or
// makes one on first start (mode 0600) and writes the public half to
// dir/plan-key.pub for the initramfs builder.
func LoadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, "plan-key")
	data, err := os.ReadFile(path)
	if err == nil {
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("plan key %s is damaged: restore it from backup, or delete it to make a new one (then rebuild the initramfs)", path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read plan key: %w", err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state folder %s: %w", dir, err)
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key.Seed())+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write plan key: %w", err)
	}
	if err := os.WriteFile(path+".pub", []byte(base64.StdEncoding.EncodeToString(pub)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write public plan key: %w", err)
	}
	return key, nil
}

// KeyInitramfsPath is where the agent reads the server's public plan key
// (initramfs.DefaultKeyPath, build.PublicKeyPath), without the leading
// slash, as a cpio entry names it.
const KeyInitramfsPath = "etc/pxeswarm/plan-key.pub"

// KeyArchive is an uncompressed newc cpio archive holding pub at
// KeyInitramfsPath, padded to a multiple of 512 bytes, to be sent right
// after an initramfs that carries no key (the packaged one, see
// Site.bootFiles). The kernel unpacks concatenated archives one after the
// other, compressed or not, each at a 4-byte-aligned offset, and a later
// file replaces an earlier one of the same name
// (Documentation/driver-api/early-userspace/buffer-format.rst;
// init/initramfs.c, unpack_to_rootfs): early microcode is shipped the same
// way. So one packaged initramfs serves any server, each with its own key.
func KeyArchive(pub ed25519.PublicKey) ([]byte, error) {
	var b bytes.Buffer
	w := cpio.Newc.Writer(&b)
	recs := []cpio.Record{
		cpio.Directory("etc", 0o755),
		cpio.Directory("etc/pxeswarm", 0o755),
		cpio.StaticFile(KeyInitramfsPath, base64.StdEncoding.EncodeToString(pub)+"\n", 0o644),
	}
	for i, r := range recs {
		r = cpio.MakeReproducible(r)
		r.Ino, r.NLink = uint64(i+1), 1
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			r.NLink = 2
		}
		if err := w.WriteRecord(r); err != nil {
			return nil, fmt.Errorf("plan key archive: %w", err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, fmt.Errorf("plan key archive: %w", err)
	}
	if pad := b.Len() % 512; pad != 0 {
		b.Write(make([]byte, 512-pad))
	}
	return b.Bytes(), nil
}
