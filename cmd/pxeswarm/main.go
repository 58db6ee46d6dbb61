// Command pxeswarm re-images classrooms over a LAN BitTorrent swarm. It is
// thin: each subcommand maps its flags to a package's Config and runs it
// under signal.NotifyContext.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/pxeswarm/pxeswarm/internal/version"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"mktorrent", "hash partition images into an image torrent", runMktorrent},
		{"seed", "seed an image from trusted sources (optionally with a tracker)", runSeed},
		{"fetch", "fetch an image from the swarm straight onto disks or files", runFetch},
		{"capture", "capture a golden disk into a new image on the boot server", runCapture},
		{"tracker", "run the LAN tracker", runTracker},
		{"serve", "run the boot server: DHCP, TFTP, HTTP, tracker and seeders", runServe},
		{"status", "show the boot server's machines, tasks and swarms", runStatus},
		{"wake", "wake machines with Wake-on-LAN (through the boot server)", runWake},
		{"schedule", "add, list or delete timed tasks (schedule add|list|delete)", runSchedule},
		{"build", "build the terminals' kernel and initramfs (build initramfs)", runBuild},
		{"version", "print the version", func(context.Context, []string) error {
			fmt.Println("pxeswarm", version.String())
			return nil
		}},
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, `pxeswarm %s: re-image a room of machines from a LAN BitTorrent swarm.

Usage: pxeswarm <command> [flags]

Commands:
`, version.String())
	for _, c := range commands() {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'pxeswarm <command> -h' for the flags of one command.\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands() {
		if c.name == os.Args[1] {
			err := c.run(ctx, os.Args[2:])
			if err == nil || errors.Is(err, context.Canceled) {
				return
			}
			if errors.Is(err, errUsage) {
				// The flag package or the help text said it already,
				// unless the error carries its own message.
				if err != errUsage && !errors.Is(err, errHelp) {
					fmt.Fprintf(os.Stderr, "pxeswarm %s: %v\n", c.name, err)
				}
				os.Exit(2)
			}
			fmt.Fprintf(os.Stderr, "pxeswarm %s: %v\n", c.name, err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "pxeswarm: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}
