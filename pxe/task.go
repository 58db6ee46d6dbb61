package pxe

import (
	"errors"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// Sentinel errors for machines, tasks and reports.
var (
	// ErrNoMachine: the store has never seen or been told about the machine.
	ErrNoMachine = errors.New("no such machine")
	// ErrNoTask: no task with that ID (or, for a report, not this machine's).
	ErrNoTask = errors.New("no such task")
	// ErrActiveTask: the machine already has an active task.
	ErrActiveTask = errors.New("machine already has an active task")
	// ErrBadTransition: the task's state machine does not allow the move.
	ErrBadTransition = errors.New("task state change not allowed")
	// ErrBadTask: a new task's fields are invalid.
	ErrBadTask = errors.New("bad task")
)

// Machine is one terminal as the server knows it.
type Machine struct {
	MAC   string `json:"mac"`             // lower-case aa:bb:cc:dd:ee:ff
	Name  string `json:"name,omitempty"`  // from the site config
	Group string `json:"group,omitempty"` // from the site config; tasks can target a group
	IP    string `json:"ip,omitempty"`    // last address it asked from
	// Arch is the firmware architecture as the DHCP server names it from
	// RFC 4578 option 93 (for example "bios" or "efi-x86_64"); empty if
	// never seen through DHCP.
	Arch       string           `json:"arch,omitempty"`
	FirstSeen  time.Time        `json:"first_seen,omitzero"`
	LastSeen   time.Time        `json:"last_seen,omitzero"`
	LastReport *protocol.Report `json:"last_report,omitempty"`
	// Inventory is the hardware the machine's agent last reported (see
	// protocol.Inventory), and InventoryAt when the server stored it. Only
	// a report on the machine's task, with the task's report token, sets
	// it; nil until then (and in stores written before inventories).
	Inventory   *protocol.Inventory `json:"inventory,omitempty"`
	InventoryAt time.Time           `json:"inventory_at,omitzero"`
}

// TaskSettings are the plan settings of a task; they go into its plan as
// they are. See [Plan] for each field.
type TaskSettings struct {
	Target      protocol.Target `json:"target"`
	CreateTable bool            `json:"create_table"`
	CheckMode   string          `json:"check"`              // "fresh" or "verify"
	SeedFor     string          `json:"seed_for,omitempty"` // Go duration
	After       string          `json:"after"`              // "reboot", "poweroff" or "shell"
	// Discard: the agent discards the free gaps of used-block parts
	// where the disk can (protocol.Plan.Discard).
	Discard bool `json:"discard,omitempty"`
	// OnError is what the agent does after an error: "halt", "retry" or
	// "shell" (protocol.OnError*). Empty in a stored task means the
	// server's default.
	OnError string `json:"on_error,omitempty"`
}

// Task is one imaging job for one machine.
type Task struct {
	ID      string             `json:"id"`
	MAC     string             `json:"mac"`
	Image   string             `json:"image"` // image name as the server publishes it
	State   protocol.TaskState `json:"state"`
	Error   string             `json:"error,omitempty"` // why it failed or was canceled
	Created time.Time          `json:"created"`
	Updated time.Time          `json:"updated"`
	TaskSettings
	// Action is what the machine does: protocol.ActionDeploy (stored
	// empty, as tasks from before captures are) or protocol.ActionCapture.
	Action string `json:"action,omitempty"`
	// Capture is a capture task's capture ID (GET /api/captures/{id});
	// its upload secret is the task's report token. Raw: the capture
	// sends every byte.
	Capture    string           `json:"capture,omitempty"`
	Raw        bool             `json:"raw,omitempty"`
	LastReport *protocol.Report `json:"last_report,omitempty"`
}

// IsCapture reports whether the task captures its machine's disk.
func (t Task) IsCapture() bool { return t.Action == protocol.ActionCapture }
