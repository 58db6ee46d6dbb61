package pxe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
)

// TFTPConfig configures the read-only TFTP server that hands the PXE
// firmware its iPXE binary.
type TFTPConfig struct {
	// Listen is the UDP address, normally ":69".
	Listen string
	// Root is the folder served; Debian's ipxe package puts undionly.kpxe,
	// ipxe.efi and snponly.efi in /usr/lib/ipxe. The binaries are GPL and
	// read from disk, never embedded.
	Root string
	// Files are served by name (without a leading slash) from the path
	// given, before Root is looked at: the signed loaders, kernel and
	// initramfs of the shim chain (bootServer.TFTPFiles). Paths are opened
	// per request.
	Files map[string]string
	// Generate, if set, makes a file per request (GRUB's per-machine
	// config): name without a leading slash and the client's address;
	// ok false passes the name on to Files and Root.
	Generate func(name, client string) (body []byte, ok bool)
}

// DefaultTFTPRoot is where Debian's ipxe package installs its binaries.
const DefaultTFTPRoot = "/usr/lib/ipxe"

// Start serves TFTP until ctx ends. Requests are read-only (writes are
// refused), confined to Root (no "..", no absolute escapes, no symlinks
// out of it: os.Root), and support the blksize (RFC 2348) and tsize
// (RFC 2349) options that PXE ROMs send.
//
// One exception to "no symlinks out": links to regular files that sit
// directly in Root when the server starts are the admin's (Debian's ipxe
// package makes /usr/lib/ipxe/ipxe.efi a link to /boot/ipxe.efi), so they
// are resolved once at start and served. A requested name still never
// leaves Root, and links that appear later are not followed.
func (c TFTPConfig) Start(ctx context.Context, log *slog.Logger) error {
	conn, err := net.ListenPacket("udp4", c.Listen)
	if err != nil {
		return fmt.Errorf("tftp: listen on %s: is another TFTP server (tftpd-hpa, dnsmasq) running? %w", c.Listen, err)
	}
	return c.Serve(ctx, log, conn)
}

// Serve is Start on an existing socket.
func (c TFTPConfig) Serve(ctx context.Context, log *slog.Logger, conn net.PacketConn) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root, err := os.OpenRoot(c.Root)
	if err != nil {
		conn.Close()
		return fmt.Errorf("tftp: root %s: install Debian's ipxe package or set the TFTP root: %w", c.Root, err)
	}
	defer root.Close()
	links := rootLinks(c.Root)
	read := func(name string, rf io.ReaderFrom) error {
		addr := rf.(tftp.OutgoingTransfer).RemoteAddr()
		clean := strings.TrimLeft(strings.ReplaceAll(name, `\`, "/"), "/")
		if c.Generate != nil {
			if body, ok := c.Generate(clean, addr.IP.String()); ok {
				rf.(tftp.OutgoingTransfer).SetSize(int64(len(body)))
				n, err := rf.ReadFrom(bytes.NewReader(body))
				log.Info("tftp: sent", "file", name, "client", addr.String(), "bytes", n, "generated", true, "err", err)
				return err
			}
		}
		var f *os.File
		var st fs.FileInfo
		var err error
		if path, ok := c.Files[clean]; ok {
			f, st, err = openFile(path, name)
		} else {
			f, st, err = openUnder(root, links, name)
		}
		if err != nil {
			log.Warn("tftp: refused", "file", name, "client", addr.String(), "err", err)
			return err
		}
		defer f.Close()
		rf.(tftp.OutgoingTransfer).SetSize(st.Size())
		start := time.Now()
		n, err := rf.ReadFrom(f)
		log.Info("tftp: sent", "file", name, "client", addr.String(), "bytes", n, "took", time.Since(start).Round(time.Millisecond), "err", err)
		return err
	}
	write := func(name string, _ io.WriterTo) error {
		log.Warn("tftp: write refused", "file", name)
		return errors.New("this TFTP server is read-only")
	}
	s := tftp.NewServer(read, write)
	s.SetTimeout(5 * time.Second)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			s.Shutdown()
		case <-done:
		}
	}()
	log.Info("tftp: serving", "addr", conn.LocalAddr().String(), "root", c.Root)
	err = s.Serve(conn)
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// openUnder opens a regular file by its TFTP name inside root. PXE ROMs
// send names like "undionly.kpxe" or "/ipxe.efi"; a leading slash means
// the root, never the host's /.
func openUnder(root *os.Root, links map[string]string, name string) (*os.File, fs.FileInfo, error) {
	clean := strings.TrimLeft(strings.ReplaceAll(name, `\`, "/"), "/")
	if clean == "" || !fs.ValidPath(clean) {
		return nil, nil, fmt.Errorf("file %q is outside the TFTP root", name)
	}
	var f *os.File
	var err error
	if target, ok := links[clean]; ok {
		f, err = os.Open(target)
	} else {
		f, err = root.Open(clean)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("file %q: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("file %q is not a regular file", name)
	}
	return f, st, nil
}

// openFile opens a regular file the config names (Files).
func openFile(path, name string) (*os.File, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("file %q: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("file %q is not a regular file", name)
	}
	return f, st, nil
}

// rootLinks maps the names of symlinks directly in dir that point to
// regular files (anywhere) to their resolved paths.
func rootLinks(dir string) map[string]string {
	links := map[string]string{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		p, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			links[e.Name()] = p
		}
	}
	return links
}
