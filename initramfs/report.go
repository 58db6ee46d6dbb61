package initramfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// reporter sends the agent's status to POST /api/report/{mac}. A 409
// answer means the server ended the task (an admin canceled it or marked
// it done): ended is closed and endState says what it became.
type reporter struct {
	client *http.Client
	url    string
	log    *slog.Logger
	// sendMu serialises reports, and each is composed under it, so they
	// reach the server in the order of the agent's phases: a periodic
	// report composed before a phase change cannot arrive after it (the
	// server refuses a step back, imaging after seeding, with a 409).
	sendMu sync.Mutex

	mu       sync.Mutex
	taskID   string
	token    string // the plan's report token, sent as a bearer token
	endState protocol.TaskState
	// inv is the machine's inventory, until a report carrying it is
	// accepted. It rides only on reports with the task's token (the
	// server stores none from others) and without an error (so the body
	// stays within the server's limit: see protocol.MaxInventoryJSON).
	inv      *protocol.Inventory
	lastWarn time.Time
	ended    chan struct{}
	endOnce  sync.Once
}

func newReporter(client *http.Client, server, mac string, log *slog.Logger) *reporter {
	return &reporter{client: client, url: server + "/api/report/" + url.PathEscape(mac), log: log, ended: make(chan struct{})}
}

// setTask names the plan's task and its report token: every report from
// here on carries both.
func (r *reporter) setTask(id, token string) {
	r.mu.Lock()
	r.taskID, r.token = id, token
	r.mu.Unlock()
}

// setInventory has the next accepted report on the task carry inv.
func (r *reporter) setInventory(inv protocol.Inventory) {
	r.mu.Lock()
	r.inv = &inv
	r.mu.Unlock()
}

// Ended is closed once the server has said the task is over.
func (r *reporter) Ended() <-chan struct{} { return r.ended }

// EndState is the state the server gave when it ended the task.
func (r *reporter) EndState() protocol.TaskState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.endState
}

// reportTimeout bounds one report: a slow server must not hold up
// imaging.
const reportTimeout = 5 * time.Second

// send posts one report. It returns ErrTaskEnded (wrapped, with the
// state) on a 409 that says the task is over; other failures are returned
// too, but callers treat them as warnings: imaging goes on while the
// server is unreachable.
func (r *reporter) send(ctx context.Context, rep protocol.Report) error {
	return r.sendFunc(ctx, func() protocol.Report { return rep })
}

// sendFunc sends the report get composes once it is this report's turn.
func (r *reporter) sendFunc(ctx context.Context, get func() protocol.Report) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.sendLocked(ctx, get())
}

// sendLocked sends rep; the caller holds sendMu.
func (r *reporter) sendLocked(ctx context.Context, rep protocol.Report) error {
	r.mu.Lock()
	if rep.TaskID == "" {
		rep.TaskID = r.taskID
	}
	token := ""
	if rep.TaskID == r.taskID {
		token = r.token
	}
	inv := r.inv
	if token != "" && rep.Error == "" && rep.Inventory == nil {
		rep.Inventory = inv
	}
	r.mu.Unlock()
	if err := rep.Check(); err != nil {
		return fmt.Errorf("report: %w", err) // a bug here, not the server's
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.warn("cannot report to the server", rep.Phase, err)
		return err
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ans struct {
		Error string             `json:"error"`
		State protocol.TaskState `json:"state"`
	}
	json.Unmarshal(reply, &ans)
	switch {
	case resp.StatusCode == http.StatusOK:
		if rep.Inventory != nil {
			r.mu.Lock()
			if r.inv == rep.Inventory {
				r.inv = nil
			}
			r.mu.Unlock()
			r.log.Info("the server has the machine's inventory", "phase", rep.Phase)
		}
		r.log.Debug("reported", "phase", rep.Phase, "done", rep.BytesDone, "total", rep.BytesTotal, "state", ans.State)
		return nil
	case resp.StatusCode == http.StatusConflict && ans.State.Active():
		// The task goes on; only this report was refused (a step the
		// state machine does not allow). Not a reason to stop.
		r.warn("the server refused a report", rep.Phase, fmt.Errorf("%s", ans.Error))
		return fmt.Errorf("report %s: server answered %s: %s", rep.Phase, resp.Status, clipText(ans.Error, 300))
	case resp.StatusCode == http.StatusConflict:
		r.mu.Lock()
		r.endState = ans.State
		r.mu.Unlock()
		r.endOnce.Do(func() {
			r.log.Warn("the server ended the task", "task", rep.TaskID, "state", ans.State, "reply", ans.Error)
			close(r.ended)
		})
		return fmt.Errorf("%w: task %s is %s on the server", ErrTaskEnded, rep.TaskID, ans.State)
	default:
		err := fmt.Errorf("report %s: server answered %s: %s", rep.Phase, resp.Status, clipText(ans.Error, 300))
		r.warn("the server refused a report", rep.Phase, err)
		return err
	}
}

// warn logs a report failure, at most every 30 s (the periodic report
// would otherwise log every 2 s while the server is down).
func (r *reporter) warn(msg, phase string, err error) {
	r.mu.Lock()
	quiet := time.Since(r.lastWarn) < 30*time.Second
	if !quiet {
		r.lastWarn = time.Now()
	}
	r.mu.Unlock()
	if !quiet {
		r.log.Warn(msg, "phase", phase, "err", err)
	}
}

// every sends get()'s report every d until ctx ends.
func (r *reporter) every(ctx context.Context, d time.Duration, get func() protocol.Report) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.periodic(ctx, get); errors.Is(err, ErrTaskEnded) {
				return
			}
		}
	}
}

// periodic sends get()'s report unless ctx ended while it waited for its
// turn: the agent stops the periodic reports before it moves to its last
// phase, and a tick that was already waiting must not send that phase
// without the last report's message (a done without the image's digest,
// which the server refuses).
func (r *reporter) periodic(ctx context.Context, get func() protocol.Report) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	if ctx.Err() != nil {
		return nil
	}
	rep := get()
	if rep.Phase == protocol.PhaseDone || rep.Phase == protocol.PhaseFailed {
		return nil // the last report is the agent's own, with its message
	}
	return r.sendLocked(ctx, rep)
}
