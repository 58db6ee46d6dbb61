package deb

import (
	"bytes"
	"cmp"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/goreleaser/nfpm/v2"
	debpkg "github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/pxeswarm/pxeswarm/internal/atomicfile"
)

// Where the package puts things.
const (
	Name         = "pxeswarm"
	BinaryPath   = "/usr/bin/pxeswarm"
	UnitPath     = "/usr/lib/systemd/system/pxeswarm.service"
	ConfigPath   = "/etc/pxeswarm/site.toml"
	BootDir      = "/usr/lib/pxeswarm/boot" // pxe.PackagedBootDir
	DocDir       = "/usr/share/doc/pxeswarm"
	ExampleName  = "site.example.toml"
	ReadmeName   = "README.md"
	KernelName   = "vmlinuz"
	InitrdName   = "initramfs"
	Architecture = "amd64"
)

// Depends are the Debian packages pxeswarm needs, read from disk and
// never embedded: iPXE's binaries (/usr/lib/ipxe/undionly.kpxe,
// ipxe.efi), and the signed UEFI chain that is the default UEFI loader,
// Microsoft-signed shim and Debian-signed GRUB of the same release (SBAT):
// /usr/lib/shim/shimx64.efi.signed and
// /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed.
var Depends = []string{"ipxe", "shim-signed", "grub-efi-amd64-signed"}

//go:embed pxeswarm.service
var unit []byte

//go:embed site.toml
var siteConfig []byte

//go:embed postinst
var postinst []byte

//go:embed prerm
var prerm []byte

//go:embed postrm
var postrm []byte

// Unit is the systemd unit the package installs at UnitPath.
func Unit() []byte { return unit }

// SiteConfig is the commented site config the package installs at
// ConfigPath.
func SiteConfig() []byte { return siteConfig }

// Config says what goes into the package.
type Config struct {
	// Out is the .deb file to write (replaced atomically). Required.
	Out string
	// Binary is the pxeswarm server binary (statically linked:
	// CGO_ENABLED=0). Required.
	Binary string
	// BootDir holds vmlinuz and initramfs from `pxeswarm build initramfs
	// --key none`. Required.
	BootDir string
	// Example is docs/site.example.toml and Readme the README, both
	// installed under DocDir. Optional.
	Example, Readme string
	// Version is the Debian version, e.g. "0.1.0~git20261205.15f4e97".
	// It must start with a digit. Required.
	Version string
	// Maintainer is the Maintainer field. Default "pxeswarm developers".
	Maintainer string
	// MTime is every file's time, for reproducible packages. Default
	// the Unix epoch.
	MTime time.Time
}

// ErrConfig means the Config is incomplete or names missing files.
var ErrConfig = errors.New("bad deb config")

// debVersion is what dpkg accepts as an upstream version with an
// optional revision (deb-version(7)), without an epoch.
var debVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?$`)

func (c Config) check() error {
	switch {
	case c.Out == "":
		return fmt.Errorf("%w: no output file: give one (--out bin/pxeswarm.deb)", ErrConfig)
	case c.Binary == "":
		return fmt.Errorf("%w: no pxeswarm binary: build one (make build) and give it (--binary bin/pxeswarm)", ErrConfig)
	case c.BootDir == "":
		return fmt.Errorf("%w: no boot folder: build the boot files (pxeswarm build initramfs --key none --out DIR) and give DIR (--boot-dir)", ErrConfig)
	case !debVersion.MatchString(c.Version):
		return fmt.Errorf("%w: version %q is not a Debian version (it must start with a digit, e.g. 0.1.0~git20261205.15f4e97)", ErrConfig, c.Version)
	}
	need := []string{c.Binary, filepath.Join(c.BootDir, KernelName), filepath.Join(c.BootDir, InitrdName)}
	for _, f := range []string{c.Example, c.Readme} {
		if f != "" {
			need = append(need, f)
		}
	}
	for _, f := range need {
		st, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrConfig, f)
		}
	}
	return static(c.Binary)
}

// Build writes the package to c.Out.
func (c Config) Build() error {
	if err := c.check(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "pxeswarm-deb-")
	if err != nil {
		return fmt.Errorf("deb: scratch folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	// nfpm reads everything, scripts included, from files.
	embedded := map[string][]byte{"pxeswarm.service": unit, "site.toml": siteConfig, "postinst": postinst, "prerm": prerm, "postrm": postrm}
	for name, data := range embedded {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			return fmt.Errorf("deb: %w", err)
		}
	}
	mtime := c.MTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0).UTC()
	}
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: mtime}}
	}
	contents := files.Contents{
		file(c.Binary, BinaryPath, 0o755),
		file(filepath.Join(tmp, "pxeswarm.service"), UnitPath, 0o644),
		file(filepath.Join(c.BootDir, KernelName), filepath.Join(BootDir, KernelName), 0o644),
		file(filepath.Join(c.BootDir, InitrdName), filepath.Join(BootDir, InitrdName), 0o644),
	}
	conf := file(filepath.Join(tmp, "site.toml"), ConfigPath, 0o644)
	conf.Type = files.TypeConfig // a conffile: dpkg keeps the admin's edits
	contents = append(contents, conf)
	if c.Example != "" {
		contents = append(contents, file(c.Example, filepath.Join(DocDir, ExampleName), 0o644))
	}
	if c.Readme != "" {
		contents = append(contents, file(c.Readme, filepath.Join(DocDir, ReadmeName), 0o644))
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name: Name, Arch: Architecture, Platform: "linux", Version: c.Version, VersionSchema: "none",
		Section: "net", Priority: "optional",
		Maintainer: cmp.Or(c.Maintainer, "pxeswarm developers <pxeswarm@localhost>"),
		Description: "re-images a room of PCs at once over PXE and a LAN BitTorrent swarm\n" +
			"The boot server: DHCP (full or proxy), TFTP for Debian's iPXE, HTTP for\n" +
			"iPXE scripts, the terminals' kernel and initramfs (prebuilt, in\n" +
			"/usr/lib/pxeswarm/boot), signed plans, the tracker and a seeder per\n" +
			"image. Terminals fetch the image from each other while writing it to disk.",
		Homepage: "https://github.com/pxeswarm/pxeswarm",
		License:  "see /usr/share/doc/pxeswarm",
		MTime:    mtime,
		Overridables: nfpm.Overridables{
			Depends:  Depends,
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(tmp, "postinst"),
				PreRemove:   filepath.Join(tmp, "prerm"),
				PostRemove:  filepath.Join(tmp, "postrm"),
			},
			// gzip, nfpm's default, which every dpkg reads: its pure-Go
			// xz took over 2 minutes for this package on 2 busy cores.
			Deb: nfpm.Deb{Compression: "gzip"},
		},
	})
	var pkg bytes.Buffer
	if err := debpkg.Default.Package(info, &pkg); err != nil {
		return fmt.Errorf("deb: packaging: %w", err)
	}
	if err := atomicfile.Write(c.Out, pkg.Bytes(), 0o644); err != nil {
		return fmt.Errorf("deb: %w", err)
	}
	return nil
}

// static checks that bin is an ELF executable with no program interpreter:
// the package depends on no C library, and a binary built with cgo would
// not even start in a root without one.
func static(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("%w: %s is not an ELF binary: %w", ErrConfig, bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: %s is dynamically linked: build it with CGO_ENABLED=0 (make build does)", ErrConfig, bin)
		}
	}
	return nil
}
