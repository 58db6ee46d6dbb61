// Command pxeswarm-deb makes pxeswarm's Debian package (package
// build/deb) from a built binary and boot files; `make deb` runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/pxeswarm/pxeswarm/build/deb"
)

func main() {
	var c deb.Config
	flag.StringVar(&c.Out, "out", "", "the .deb to write")
	flag.StringVar(&c.Binary, "binary", "bin/pxeswarm", "the pxeswarm binary (CGO_ENABLED=0)")
	flag.StringVar(&c.BootDir, "boot-dir", "", "folder with vmlinuz and initramfs from `pxeswarm build initramfs --key none`")
	flag.StringVar(&c.Version, "version", "", "Debian version, starting with a digit")
	flag.StringVar(&c.Example, "example", "docs/site.example.toml", "the full example config, installed under "+deb.DocDir)
	flag.StringVar(&c.Readme, "readme", "README.md", "the README, installed under "+deb.DocDir)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: pxeswarm-deb --out X.deb --boot-dir DIR --version V [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := c.Build(); err != nil {
		fmt.Fprintf(os.Stderr, "pxeswarm-deb: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("package    %s (%s)\n", c.Out, c.Version)
}
