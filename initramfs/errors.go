package initramfs

import "errors"

// Sentinel errors that callers (and tests) branch on. Run's error wraps
// one of these, or one of the pxe, partition or imager sentinels.
var (
	// ErrNoLink: no Ethernet link appeared (no NIC, or its driver is not
	// in the initramfs).
	ErrNoLink = errors.New("no network link")
	// ErrNoCarrier: links exist but none has a carrier (cable, switch
	// port).
	ErrNoCarrier = errors.New("no carrier")
	// ErrNoServer: the network is up but nothing named the server: no
	// DHCP option and no pxeswarm.server= on the kernel command line.
	ErrNoServer = errors.New("no server URL")
	// ErrNoMAC: the agent does not know which machine it is (no lease, no
	// pxeswarm.mac=, no Config.MAC).
	ErrNoMAC = errors.New("no MAC address")
	// ErrNoKey: the initramfs carries no (usable) plan key.
	ErrNoKey = errors.New("no plan key")
	// ErrNoPlan: the server has no active task for this machine.
	ErrNoPlan = errors.New("no plan for this machine")
	// ErrInfoHashMismatch: the torrent the plan points to is not the one
	// the plan pins.
	ErrInfoHashMismatch = errors.New("torrent info-hash differs from the plan")
	// ErrTaskEnded: the server answered a report with 409: the task was
	// canceled or finished there.
	ErrTaskEnded = errors.New("task ended on the server")
	// ErrReadBack: the image read back from the disk is not what was
	// written.
	ErrReadBack = errors.New("image read back differs")
)

// Error is a failure of the agent: what failed, what to do about it, and
// whether the network was the cause (then the console also gets a dump of
// links, addresses and routes).
type Error struct {
	What    string // what failed, for a person at the console
	Do      string // what to do next
	Err     error  // the cause
	Network bool
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.What
	}
	return e.What + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }
