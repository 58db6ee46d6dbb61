// Command pxeswarm-agent is the terminal agent: u-root's init runs it as
// uinit in the pxeswarm initramfs. It maps a few flags (for a person
// retrying by hand from the shell) to initramfs.Config and runs it; all
// the work is in package initramfs. It logs text to /dev/console and
// stderr (once, when they are the same device).
//
//	pxeswarm-agent [-server URL] [-mac MAC] [-key FILE] [-shell PATH] [-debug]
package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/initramfs/coldplug"
)

func main() {
	os.Exit(run())
}

func run() int {
	var cfg initramfs.Config
	debug := flag.Bool("debug", false, "debug logging (also: pxeswarm.debug on the kernel command line)")
	flag.StringVar(&cfg.ServerURL, "server", "", "server URL; skips DHCP (the network must already be up)")
	flag.StringVar(&cfg.MAC, "mac", "", "this machine's MAC for the plan (default: pxeswarm.mac=, then the leased link's)")
	flag.StringVar(&cfg.KeyPath, "key", initramfs.DefaultKeyPath, "the server's public plan key")
	flag.StringVar(&cfg.Shell, "shell", initramfs.DefaultShell, "shell for a plan's on_error=shell or after=shell (falls back to "+initramfs.FallbackShell+")")
	noColdplug := flag.Bool("no-coldplug", false, "do not load kernel modules")
	flag.Parse()

	out, tty := consoleOut()
	con := initramfs.NewConsole(out)
	con.SetTerminal(tty)
	level := slog.LevelInfo
	if data, err := os.ReadFile(initramfs.DefaultCmdline); err == nil {
		if c, _ := initramfs.ParseCmdline(string(data)); c.Debug {
			level = slog.LevelDebug
		}
	}
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(con, &slog.HandlerOptions{Level: level}))

	cfg.Console = con
	if !*noColdplug {
		cfg.Coldplug = func(ctx context.Context, log *slog.Logger) ([]string, error) {
			var always []string
			if _, err := os.Stat("/sys/firmware/efi"); err == nil {
				// Booted through UEFI: efivarfs, which no device asks
				// for, tells the agent which partition the boot loader
				// (the rescue stick's) was loaded from.
				always = []string{"efivarfs"}
			}
			return coldplug.Load(ctx, log, coldplug.Config{Root: "/", Always: always})
		}
	}
	// Ctrl-\ (SIGQUIT) would kill the agent with a stack dump, and
	// u-root's init would then start a shell: the agent must not exit on
	// a key press unless on_error says shell. Ctrl-Z (SIGTSTP) would
	// freeze it mid-write. Ctrl-C cancels ctx: the agent reports and
	// does what on_error says.
	signal.Ignore(syscall.SIGQUIT, syscall.SIGTSTP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cfg.Run(ctx, log); err != nil {
		return 1
	}
	return 0
}

// consoleOut is where the console and the log go, and whether it is a
// terminal.
//
// Run by u-root's init (our parent is PID 1), stderr already reaches every
// console: it is the console itself, or, with console= on the kernel
// command line, a pipe init copies to each console named there (libinit
// WithMultiTTY). Writing /dev/console too would print every line twice,
// so stderr alone is used, and it is taken as a terminal (the consoles
// are). Run by hand from a shell, the output goes to /dev/console and
// stderr, once if they are the same device.
func consoleOut() (io.Writer, bool) {
	errTTY := initramfs.IsTerminal(os.Stderr)
	if os.Getppid() == 1 {
		return os.Stderr, true
	}
	con, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return os.Stderr, errTTY
	}
	if sameDevice(con, os.Stderr) {
		con.Close()
		return os.Stderr, errTTY
	}
	return io.MultiWriter(con, os.Stderr), initramfs.IsTerminal(con) && errTTY
}

// sameDevice reports whether a and b are the same character device.
func sameDevice(a, b *os.File) bool {
	sa, err1 := a.Stat()
	sb, err2 := b.Stat()
	if err1 != nil || err2 != nil || sa.Mode()&os.ModeCharDevice == 0 || sb.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	x, ok1 := sa.Sys().(*syscall.Stat_t)
	y, ok2 := sb.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && x.Rdev == y.Rdev
}
