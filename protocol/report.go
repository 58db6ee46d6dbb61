package protocol

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// ErrBadReport: an agent report's fields are invalid.
var ErrBadReport = errors.New("bad report")

// TaskState is where a task is in its life:
//
//	pending → booting → imaging → seeding → done
//
// or failed (with its error) or canceled from any active state. See
// [CanTransition] for the exact rules.
type TaskState string

const (
	TaskPending  TaskState = "pending"  // created; the machine has not booted our kernel yet
	TaskBooting  TaskState = "booting"  // the iPXE script handed out our kernel, or the agent said it booted
	TaskImaging  TaskState = "imaging"  // the agent works on the disk: table, download, verify
	TaskSeeding  TaskState = "seeding"  // the image is on the disk; the agent seeds it to the others
	TaskDone     TaskState = "done"     // finished; the next boot is from the local disk
	TaskFailed   TaskState = "failed"   // the agent reported an error (Task.Error)
	TaskCanceled TaskState = "canceled" // stopped by an admin
)

// taskOrder ranks the active states; terminal states are not in it.
var taskOrder = map[TaskState]int{TaskPending: 0, TaskBooting: 1, TaskImaging: 2, TaskSeeding: 3}

// Active reports whether the task still has work to do (not done, failed
// or canceled). A machine has at most one active task.
func (s TaskState) Active() bool { _, ok := taskOrder[s]; return ok }

// Valid reports whether s is one of the states above.
func (s TaskState) Valid() bool {
	return s.Active() || s == TaskDone || s == TaskFailed || s == TaskCanceled
}

// CanTransition reports whether a task may move from one state to another:
//   - from an active state forward (pending → booting → imaging → seeding,
//     skipping allowed: an agent booted from a USB stick never passes the
//     iPXE script);
//   - from imaging or seeding back to booting: the machine rebooted mid-task
//     and retries (its disk may be half-written, so it must not boot it);
//   - from any active state to done, failed or canceled;
//   - to the same state (repeated reports, repeated admin calls).
//
// Nothing returns to pending, and nothing leaves done, failed or canceled.
func CanTransition(from, to TaskState) bool {
	if !from.Valid() || !to.Valid() {
		return false
	}
	if from == to {
		return true
	}
	fromRank, active := taskOrder[from]
	if !active {
		return false
	}
	toRank, toActive := taskOrder[to]
	switch {
	case !toActive:
		return true
	case to == TaskBooting:
		return true
	default:
		return toRank > fromRank
	}
}

// Agent phases in a [Report]. They map to task states: booting → booting;
// disk, imaging, verifying and capturing → imaging; seeding → seeding;
// done → done; failed → failed.
const (
	PhaseBooting   = "booting"   // the agent is up and looking for its plan
	PhaseDisk      = "disk"      // inspecting disks, making the partition table
	PhaseImaging   = "imaging"   // downloading and writing
	PhaseVerifying = "verifying" // hashing what the target holds
	PhaseSeeding   = "seeding"   // complete; seeding to the others
	PhaseCapturing = "capturing" // a capture: sending the disk's used bytes to the server
	PhaseDone      = "done"      // finished; about to reboot (or power off)
	PhaseFailed    = "failed"    // stopped on an error (Report.Error)
)

var phaseState = map[string]TaskState{
	PhaseBooting: TaskBooting, PhaseDisk: TaskImaging, PhaseImaging: TaskImaging,
	PhaseVerifying: TaskImaging, PhaseCapturing: TaskImaging, PhaseSeeding: TaskSeeding, PhaseDone: TaskDone, PhaseFailed: TaskFailed,
}

// MaxReportText bounds Report.Error and Report.Message.
const MaxReportText = 4 << 10

// Report is the agent's status report, POSTed as JSON to
// /api/report/{mac} every few seconds and at each phase change.
type Report struct {
	// TaskID is the plan's task; empty when the agent has no plan (it
	// could not fetch or verify one): then only the machine is updated.
	TaskID     string `json:"task_id"`
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	RateBPS    int64  `json:"rate_bps"` // bytes per second, recent
	Peers      int    `json:"peers"`
	Error      string `json:"error,omitempty"`
	Message    string `json:"message,omitempty"`
	// Inventory is what the agent found on the machine. The agent sends
	// it with its first report on a task (the first that carries the
	// task's report token) and again until one such report is accepted;
	// the server keeps it with the machine only from a report whose token
	// it checked, and never with the report itself (Machine.LastReport,
	// Task.LastReport have none).
	Inventory *Inventory `json:"inventory,omitempty"`
	// Received is, per source, the useful image bytes the agent has
	// received on this task so far: at most MaxReportSources sources, the
	// largest, each named [SourceServer] or by the peer's IP and listen
	// port. The server keeps it (for GET /api/swarm) only from a report
	// whose token it checked, and never with the report itself.
	Received []Received `json:"received,omitempty"`
	// PeerPort is the port the agent takes peer connections on, so the
	// server can tell which machine another agent's Received names.
	PeerPort uint16 `json:"peer_port,omitempty"`
	// At and From are set by the server when it receives the report;
	// whatever the agent sends there is overwritten.
	At   time.Time `json:"at,omitzero"`
	From string    `json:"from,omitempty"`
}

// Check validates a report's fields; errors wrap ErrBadReport.
func (r *Report) Check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadReport, fmt.Sprintf(format, args...))
	}
	if _, ok := phaseState[r.Phase]; !ok {
		return bad("phase %q: want booting, disk, imaging, verifying, capturing, seeding, done or failed", Clip(r.Phase, 40))
	}
	if len(r.TaskID) > 64 {
		return bad("task_id is %d bytes: send the plan's task_id", len(r.TaskID))
	}
	if r.BytesDone < 0 || r.BytesTotal < 0 || r.RateBPS < 0 || r.Peers < 0 {
		return bad("bytes_done, bytes_total, rate_bps and peers must not be negative")
	}
	if r.BytesTotal > 0 && r.BytesDone > r.BytesTotal {
		return bad("bytes_done %d is more than bytes_total %d", r.BytesDone, r.BytesTotal)
	}
	if len(r.Error) > MaxReportText || len(r.Message) > MaxReportText {
		return bad("error and message must be at most %d bytes each", MaxReportText)
	}
	if err := checkReceived(r.Received); err != nil {
		return fmt.Errorf("%w: %w", ErrBadReport, err)
	}
	if r.Inventory != nil {
		if err := r.Inventory.Check(); err != nil {
			return fmt.Errorf("%w: %w", ErrBadReport, err)
		}
	}
	return nil
}

// StateOfPhase is the task state a report's phase moves its task to;
// "" for a phase that is not one of the Phase constants (a checked
// report has none such).
func StateOfPhase(phase string) TaskState { return phaseState[phase] }

// SourceServer names the image hosts in [Report.Received]: the server's
// seeder and its web seed.
const SourceServer = "server"

// MaxReportSources bounds [Report.Received]: the agent sends its largest
// sources.
const MaxReportSources = 16

// MaxSourceBytes bounds one [Received.Bytes] (1 PiB).
const MaxSourceBytes = 1 << 50

// Received is what an agent received from one source.
type Received struct {
	// From is SourceServer or the peer's IP and listen port
	// ("198.18.1.12:6881").
	From  string `json:"from"`
	Bytes int64  `json:"bytes"`
}

// checkReceived validates a report's sources: at most MaxReportSources,
// each SourceServer or an IP:port named once, with 0 to MaxSourceBytes.
func checkReceived(rs []Received) error {
	if len(rs) > MaxReportSources {
		return fmt.Errorf("received lists %d sources: send at most %d, the largest", len(rs), MaxReportSources)
	}
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		if r.From != SourceServer {
			ap, err := netip.ParseAddrPort(r.From)
			if err != nil || len(r.From) > 64 || ap.Port() == 0 || ap.Addr().Zone() != "" {
				return fmt.Errorf("received from %q: want %q or a peer's IP:port", Clip(r.From, 64), SourceServer)
			}
		}
		if r.Bytes < 0 || r.Bytes > MaxSourceBytes {
			return fmt.Errorf("received %d bytes from %s: want 0 to %d", r.Bytes, r.From, int64(MaxSourceBytes))
		}
		if seen[r.From] {
			return fmt.Errorf("received names %s twice: send one total per source", r.From)
		}
		seen[r.From] = true
	}
	return nil
}
