package initramfs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// Cmdline is what the agent reads from the kernel command line. The boot
// server's iPXE script writes pxeswarm.server, pxeswarm.mac and
// pxeswarm.task (pxe.agentScript); the rest are for people at a console.
type Cmdline struct {
	// Server is pxeswarm.server=URL: the server, used when DHCP does not
	// carry the URL option.
	Server string
	// MAC is pxeswarm.mac=aa:bb:cc:dd:ee:ff: the interface iPXE booted
	// from, so the agent asks DHCP there first and fetches that MAC's plan.
	MAC string
	// Task is pxeswarm.task=ID: the task the server booted us for. Only a
	// hint: the signed plan names the task that is done. It is used to
	// report a failure when no plan could be verified.
	Task string
	// Debug is pxeswarm.debug (or pxeswarm.debug=1): debug logging.
	Debug bool
	// NoReadBack is pxeswarm.readback=0: skip reading the written image
	// back for its SHA-256 (see Config.NoReadBack).
	NoReadBack bool
	// Stick is pxeswarm.stick=PARTUUID: the rescue stick's boot loader
	// entry names the ESP it was built with. The boot loader's own word
	// (the LoaderDevicePartUUID EFI variable) wins when it has one.
	Stick string
	// Mode is pxeswarm.mode=network|local: the stick's boot entry.
	Mode string
	// OnError is pxeswarm.on_error=halt|retry|shell: what to do after an
	// error without a verified plan. Honoured only when the machine
	// booted from a rescue stick (the boot entry is on the stick); on a
	// network boot the command line comes from the network.
	OnError string
}

// ParseCmdline reads the pxeswarm.* parameters of a kernel command line
// (the contents of /proc/cmdline). Parameters are split on spaces except
// inside double quotes, as the kernel does (lib/cmdline.c next_arg: the
// quotes may surround the whole parameter or only its value). Other
// parameters are ignored; a later parameter overrides an earlier one.
// Bad values are left out of the result and reported together in the
// error; the good ones are still returned.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	var errs []error
	for _, arg := range splitCmdline(s) {
		key, val, hasVal := strings.Cut(arg, "=")
		if !strings.HasPrefix(key, "pxeswarm.") {
			continue
		}
		bad := func(want string) {
			errs = append(errs, fmt.Errorf("kernel command line %s=%q: want %s", key, clipText(val, 80), want))
		}
		switch key {
		case "pxeswarm.server":
			if !httpURL(val) {
				bad("an http URL such as http://198.18.0.1:8080")
				continue
			}
			c.Server = strings.TrimRight(val, "/")
		case "pxeswarm.mac":
			mac, err := protocol.ParseMAC(val)
			if err != nil {
				bad("a MAC address such as 52:54:00:12:34:56")
				continue
			}
			c.MAC = mac
		case "pxeswarm.task":
			if val == "" || len(val) > 64 || strings.ContainsAny(val, " /?#") {
				bad("a task ID such as t12")
				continue
			}
			c.Task = val
		case "pxeswarm.stick":
			if !protocol.IsGUID(val) {
				bad("a partition GUID such as 1c5e2d4f-9a0b-4c3d-8e7f-0123456789ab")
				continue
			}
			c.Stick = strings.ToLower(val)
		case "pxeswarm.mode":
			if val != ModeNetwork && val != ModeLocal {
				bad(ModeNetwork + " or " + ModeLocal)
				continue
			}
			c.Mode = val
		case "pxeswarm.on_error":
			if !protocol.ValidOnError(val) {
				bad("halt, retry or shell")
				continue
			}
			c.OnError = val
		case "pxeswarm.debug":
			b, ok := parseFlag(val, hasVal)
			if !ok {
				bad("nothing, 1 or 0")
				continue
			}
			c.Debug = b
		case "pxeswarm.readback":
			b, ok := parseFlag(val, hasVal)
			if !ok {
				bad("1 or 0")
				continue
			}
			c.NoReadBack = !b
		default:
			errs = append(errs, fmt.Errorf("kernel command line: unknown parameter %s: the agent knows pxeswarm.server, .mac, .task, .stick, .mode, .on_error, .debug and .readback", clipText(key, 40)))
		}
	}
	return c, errors.Join(errs...)
}

// parseFlag reads a boolean parameter: bare means true.
func parseFlag(val string, hasVal bool) (bool, bool) {
	if !hasVal {
		return true, true
	}
	switch strings.ToLower(val) {
	case "", "y", "yes", "on":
		return true, true
	case "n", "no", "off":
		return false, true
	}
	b, err := strconv.ParseBool(val)
	return b, err == nil
}

// splitCmdline splits on spaces (and tabs, newlines) outside double
// quotes and drops the quotes, as the kernel's next_arg does.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// clipText shortens s for messages (it may come from outside).
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
