package pxe

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/version"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/console"
	"github.com/pxeswarm/pxeswarm/pxe/wake"
)

// store returns the Store for the API routes, answering 503 without one.
func (s *bootServer) store(w http.ResponseWriter) (*Store, bool) {
	if s.cfg.Store == nil {
		writeError(w, http.StatusServiceUnavailable, errors.New("this server runs without a task store: the API is off"))
		return nil, false
	}
	return s.cfg.Store, true
}

// MachineStatus is one entry of GET /api/machines: the machine and its
// active task, if any.
type MachineStatus struct {
	Machine
	Task *Task `json:"task,omitempty"`
}

func (s *bootServer) serveMachines(w http.ResponseWriter, r *http.Request) {
	st, ok := s.store(w)
	if !ok {
		return
	}
	f, err := readFleet(st)
	if err != nil {
		s.serverError(w, "listing machines", err)
		return
	}
	writeJSON(w, http.StatusOK, f.statuses(r.URL.Query().Get("group")))
}

// fleet is the store's machines and tasks, read once for one answer (a
// console update needs both lists for its machines and its swarm).
type fleet struct {
	machines []Machine
	tasks    []Task
}

// readFleet reads the machines and the tasks of st.
func readFleet(st *Store) (fleet, error) {
	ms, err := st.Machines()
	if err != nil {
		return fleet{}, err
	}
	tasks, err := st.Tasks()
	if err != nil {
		return fleet{}, err
	}
	return fleet{machines: ms, tasks: tasks}, nil
}

// statuses lists the machines (of group, unless it is empty) with their
// active tasks.
func (f fleet) statuses(group string) []MachineStatus {
	active := map[string]*Task{}
	for i := range f.tasks {
		if f.tasks[i].State.Active() {
			active[f.tasks[i].MAC] = &f.tasks[i]
		}
	}
	ret := make([]MachineStatus, 0, len(f.machines))
	for _, m := range f.machines {
		if group != "" && m.Group != group {
			continue
		}
		ret = append(ret, MachineStatus{Machine: m, Task: active[m.MAC]})
	}
	return ret
}

// Snapshot is what the console's event stream (GET /api/events) pushes:
// every machine with its active task, as GET /api/machines returns them.
type Snapshot struct {
	Machines []MachineStatus `json:"machines"`
	// Swarm is who fed whom, as GET /api/swarm returns it.
	Swarm []SwarmGraph `json:"swarm"`
}

// snapshot reads the store once for both halves of a console update.
func (s *bootServer) snapshot() (any, error) {
	f, err := readFleet(s.cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("listing machines and tasks for the console: %w", err)
	}
	return Snapshot{Machines: f.statuses(""), Swarm: s.swarmGraphs(f)}, nil
}

// swarmGraphs is who fed whom, per image, with the machines' names and
// the tasks' states from f.
func (s *bootServer) swarmGraphs(f fleet) []SwarmGraph {
	states := make(map[string]protocol.TaskState, len(f.tasks))
	for _, t := range f.tasks {
		states[t.ID] = t.State
	}
	return s.flows.graphs(f.machines, states)
}

// serveSwarmGraphs answers GET /api/swarm: who fed whom, per image (see
// SwarmGraph), from the agents' token-checked reports; ?image= picks one.
func (s *bootServer) serveSwarmGraphs(w http.ResponseWriter, r *http.Request) {
	st, ok := s.store(w)
	if !ok {
		return
	}
	f, err := readFleet(st)
	if err != nil {
		s.serverError(w, "drawing the swarm", err)
		return
	}
	gs := s.swarmGraphs(f)
	if image := r.URL.Query().Get("image"); image != "" {
		gs = slices.DeleteFunc(gs, func(g SwarmGraph) bool { return g.Image != image })
	}
	writeJSON(w, http.StatusOK, gs)
}

// serveMachine answers GET /api/machines/{mac}: one machine (with its
// inventory, if its agent has reported one) and its active task.
func (s *bootServer) serveMachine(w http.ResponseWriter, r *http.Request) {
	st, ok := s.store(w)
	if !ok {
		return
	}
	mac, ok := macParam(w, r, r.PathValue("mac"))
	if !ok {
		return
	}
	m, err := st.Machine(mac)
	if errors.Is(err, ErrNoMachine) {
		writeError(w, http.StatusNotFound, fmt.Errorf("%w: list them with GET /api/machines", err))
		return
	}
	if err != nil {
		s.serverError(w, "reading a machine", err)
		return
	}
	ret := MachineStatus{Machine: m}
	task, ok, err := st.ActiveTask(mac)
	if err != nil {
		s.serverError(w, "reading a machine's task", err)
		return
	}
	if ok {
		ret.Task = &task
	}
	writeJSON(w, http.StatusOK, ret)
}

// serveTasks answers GET /api/tasks, optionally filtered by ?mac= and
// ?state= (a state, or "active").
func (s *bootServer) serveTasks(w http.ResponseWriter, r *http.Request) {
	st, ok := s.store(w)
	if !ok {
		return
	}
	q := r.URL.Query()
	mac := q.Get("mac")
	if mac != "" {
		var err error
		if mac, err = protocol.ParseMAC(mac); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	state := protocol.TaskState(q.Get("state"))
	if state != "" && state != "active" && !state.Valid() {
		writeError(w, http.StatusBadRequest, fmt.Errorf("state %q: want active, pending, booting, imaging, seeding, done, failed or canceled", protocol.Clip(string(state), 40)))
		return
	}
	tasks, err := st.Tasks()
	if err != nil {
		s.serverError(w, "listing tasks", err)
		return
	}
	ret := make([]Task, 0, len(tasks))
	for _, t := range tasks {
		if (mac == "" || t.MAC == mac) && (state == "" || t.State == state || state == "active" && t.State.Active()) {
			ret = append(ret, t)
		}
	}
	writeJSON(w, http.StatusOK, ret)
}

func (s *bootServer) serveSwarms(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Swarms == nil {
		writeError(w, http.StatusNotFound, errors.New("no swarm statistics: this server runs without a tracker"))
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Swarms())
}

// Status is GET /api/status: a summary of the server.
type Status struct {
	Version  string                     `json:"version"`
	Uptime   string                     `json:"uptime"`
	Machines int                        `json:"machines"`
	Tasks    map[protocol.TaskState]int `json:"tasks"`  // by state
	Active   int                        `json:"active"` // tasks still to finish
	Images   []ImageStatus              `json:"images"`
	AdminAPI bool                       `json:"admin_api"` // an admin token is set
	Tracker  bool                       `json:"tracker"`   // the tracker shares this port
	// Wake: Wake-on-LAN is on (POST /api/wake and "wake" answer).
	Wake bool `json:"wake"`
	// Captures are the server's captures, newest first (none when
	// captures are off).
	Captures []protocol.CaptureState `json:"captures,omitempty"`
}

func (s *bootServer) serveStatus(w http.ResponseWriter, r *http.Request) {
	st := Status{
		Version: version.String(), Uptime: time.Since(s.started).Round(time.Second).String(),
		Tasks: map[protocol.TaskState]int{}, Images: []ImageStatus{},
		AdminAPI: s.cfg.AdminToken != "", Tracker: s.cfg.Tracker != nil, Wake: s.cfg.Wake != nil,
	}
	st.Images = s.imageStatuses()
	if s.cfg.Captures != nil {
		st.Captures = s.cfg.Captures.List()
	}
	if s.cfg.Store != nil {
		ms, err := s.cfg.Store.Machines()
		if err != nil {
			s.serverError(w, "listing machines", err)
			return
		}
		tasks, err := s.cfg.Store.Tasks()
		if err != nil {
			s.serverError(w, "listing tasks", err)
			return
		}
		st.Machines = len(ms)
		for _, t := range tasks {
			st.Tasks[t.State]++
			if t.State.Active() {
				st.Active++
			}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *bootServer) serverError(w http.ResponseWriter, what string, err error) {
	s.log.Error("http: "+what, "err", err)
	writeError(w, http.StatusInternalServerError, fmt.Errorf("server error %s: see the server log", what))
}

// admin guards an admin route: Authorization: Bearer <AdminToken>. The
// tokens are compared as SHA-256 sums in constant time, so neither the
// token's bytes nor its length leak through timing. No configured token
// means the admin API is off (403), never open.
//
// A request without an Authorization header but with a console session
// cookie is the console's: it passes with a valid session, the session's
// CSRF token in X-CSRF-Token and a same-site Origin (console.CheckChange),
// and is refused otherwise (401 without a valid session, 403 for a
// missing CSRF token or a cross-site request).
func (s *bootServer) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.HTTPSListen != "" && r.TLS == nil {
			s.log.Warn("http: admin request over plain HTTP refused; HTTPS is on", "path", r.URL.Path, "client", remoteIP(r), "has_auth", r.Header.Get("Authorization") != "")
			writeError(w, http.StatusForbidden, fmt.Errorf("the admin API answers only over HTTPS on this server: use %s%s (pin the certificate fingerprint that pxeswarm serve printed, or curl --cacert <state_dir>/%s); a token sent here crossed the network in clear: if others share this network, replace it",
				s.cfg.HTTPSURL, r.URL.Path, TLSCertFile))
			return
		}
		if r.Header.Get("Authorization") == "" && s.console != nil && s.console.HasSession(r) {
			if err := s.console.CheckChange(r); err != nil {
				code := http.StatusForbidden
				if errors.Is(err, console.ErrNoSession) {
					code = http.StatusUnauthorized
				}
				s.log.Warn("http: console change refused", "path", r.URL.Path, "client", remoteIP(r), "origin", protocol.Clip(r.Header.Get("Origin"), 100), "err", err)
				writeError(w, code, err)
				return
			}
			if _, ok := s.store(w); !ok {
				return
			}
			h(w, r)
			return
		}
		if s.cfg.AdminToken == "" {
			writeError(w, http.StatusForbidden, errors.New("the admin API is disabled: set an admin token in the server config to use it"))
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
			s.log.Warn("http: admin request refused", "path", r.URL.Path, "client", remoteIP(r), "has_auth", r.Header.Get("Authorization") != "")
			w.Header().Set("WWW-Authenticate", `Bearer realm="pxeswarm"`)
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong admin token: send Authorization: Bearer <admin token from the server config>"))
			return
		}
		if _, ok := s.store(w); !ok {
			return
		}
		h(w, r)
	}
}

// CreateTasks is the body of POST /api/tasks. Exactly one of MAC and Group
// is set; fields left out take the server's plan defaults.
type CreateTasks struct {
	// Action is "deploy" (the default) or "capture": the machine (MAC
	// only) PXE-boots and uploads its disk (Target picks it, "first" by
	// default) as image Image; see POST /api/captures for the exchange.
	Action      string           `json:"action,omitempty"`
	Raw         bool             `json:"raw,omitempty"` // a capture sends every byte
	MAC         string           `json:"mac,omitempty"`
	Group       string           `json:"group,omitempty"` // every known machine of the group
	Image       string           `json:"image"`
	Target      *protocol.Target `json:"target,omitempty"`
	Check       string           `json:"check,omitempty"` // fresh or verify
	CreateTable *bool            `json:"create_table,omitempty"`
	Discard     *bool            `json:"discard,omitempty"`  // discard free space after writing (TRIM)
	SeedFor     string           `json:"seed_for,omitempty"` // Go duration, e.g. "10m"
	After       string           `json:"after,omitempty"`    // reboot, poweroff or shell
	OnError     string           `json:"on_error,omitempty"` // halt, retry or shell
	// Wake sends Wake-on-LAN packets once the tasks exist, and again
	// while a machine has not PXE-booted (wake.retry_every, wake.retries).
	Wake bool `json:"wake,omitempty"`
}

// CreatedTasks answers POST /api/tasks.
type CreatedTasks struct {
	Tasks []Task `json:"tasks"`
	// Sent are the first round of magic packets (with wake).
	Sent []wake.Sent `json:"sent,omitempty"`
	// WakeError says what failed when sending them; the tasks exist.
	WakeError string `json:"wake_error,omitempty"`
}

// taskSettings are req's plan settings over the server's defaults,
// checked.
func (s *bootServer) taskSettings(req CreateTasks) (TaskSettings, error) {
	set := TaskSettings{CheckMode: req.Check, SeedFor: req.SeedFor, After: req.After, OnError: req.OnError,
		CreateTable: s.cfg.Defaults.CreateTable, Discard: s.cfg.Defaults.Discard}
	if req.Target != nil {
		set.Target = *req.Target
	}
	if req.CreateTable != nil {
		set.CreateTable = *req.CreateTable
	}
	if req.Discard != nil {
		set.Discard = *req.Discard
	}
	set = withPlanDefaults(set, s.cfg.Defaults)
	return set, s.checkSettings(set)
}

// checkImage answers 400 unless image is published.
func (s *bootServer) checkImage(w http.ResponseWriter, image string) bool {
	if _, ok := s.cat.Get(image); !ok {
		names := cmp.Or(strings.Join(s.cat.Names(), ", "), "none yet: add one with POST /api/images")
		writeError(w, http.StatusBadRequest, fmt.Errorf("image %q is not published by this server: pick one of %s", protocol.Clip(image, 60), names))
		return false
	}
	return true
}

// errNoGroup: no known machine is in the group.
var errNoGroup = errors.New("no known machine is in the group")

// groupMACs are the MACs of group's known machines; none wraps errNoGroup.
func (s *bootServer) groupMACs(group string) ([]string, error) {
	ms, err := s.cfg.Store.Machines()
	if err != nil {
		return nil, err
	}
	var macs []string
	for _, m := range ms {
		if m.Group == group {
			macs = append(macs, m.MAC)
		}
	}
	if len(macs) == 0 {
		return nil, fmt.Errorf("%w: %q: list machines and their groups in the config (or GET /api/machines)", errNoGroup, protocol.Clip(group, 60))
	}
	return macs, nil
}

func (s *bootServer) serveCreateTasks(w http.ResponseWriter, r *http.Request) {
	var req CreateTasks
	if !decodeJSON(w, r, s.cfg.MaxBody, &req) {
		return
	}
	bad := func(format string, args ...any) {
		writeError(w, http.StatusBadRequest, fmt.Errorf(format, args...))
	}
	switch req.Action {
	case "", protocol.ActionDeploy:
	case protocol.ActionCapture:
		s.createCaptureTask(w, r, req)
		return
	default:
		bad("action %q: want %s or %s", protocol.Clip(req.Action, 30), protocol.ActionDeploy, protocol.ActionCapture)
		return
	}
	if req.Raw {
		bad("raw is for a capture (action capture): a deploy writes what the image holds")
		return
	}
	if (req.MAC == "") == (req.Group == "") {
		bad("set either mac (one machine) or group (every known machine of a group), not both or neither")
		return
	}
	if !s.checkImage(w, req.Image) {
		return
	}
	set, err := s.taskSettings(req)
	if err != nil {
		bad("%v", err)
		return
	}
	if req.Wake && s.cfg.Wake == nil {
		writeError(w, http.StatusForbidden, fmt.Errorf("%w; no task was created", ErrWakeOff))
		return
	}
	var macs []string
	if req.MAC != "" {
		mac, err := protocol.ParseMAC(req.MAC)
		if err != nil {
			bad("%v", err)
			return
		}
		macs = append(macs, mac)
	} else if macs, err = s.groupMACs(req.Group); errors.Is(err, errNoGroup) {
		bad("%v", err)
		return
	} else if err != nil {
		s.serverError(w, "listing machines", err)
		return
	}
	tasks := make([]Task, len(macs))
	for i, mac := range macs {
		tasks[i] = Task{MAC: mac, Image: req.Image, TaskSettings: set}
	}
	created, err := s.cfg.Store.AddTasks(tasks)
	if !s.tasksAdded(w, err) {
		return
	}
	for _, t := range created {
		s.log.Info("http: task created", "task", t.ID, "mac", t.MAC, "image", t.Image, "client", remoteIP(r))
	}
	reply := CreatedTasks{Tasks: created}
	if req.Wake {
		// After the tasks exist: a machine that wakes at once finds its task.
		var err error
		if reply.Sent, err = s.cfg.Wake.WakeTasks(created); err != nil {
			reply.WakeError = err.Error()
		}
		s.log.Info("http: wake", "machines", len(created), "packets", len(reply.Sent), "err", err, "client", remoteIP(r))
	}
	writeJSON(w, http.StatusCreated, reply)
}

// tasksAdded answers an AddTasks error, if any.
func (s *bootServer) tasksAdded(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrActiveTask):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, protocol.ErrBadMAC), errors.Is(err, ErrBadTask):
		writeError(w, http.StatusBadRequest, err)
	default:
		s.serverError(w, "creating tasks", err)
	}
	return false
}

// serveTaskTo answers POST /api/tasks/{id}/cancel and .../done.
func (s *bootServer) serveTaskTo(to protocol.TaskState) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		reason := ""
		if to == protocol.TaskCanceled {
			reason = "canceled by the admin API from " + remoteIP(r)
		}
		t, err := s.cfg.Store.Transition(id, to, reason)
		switch {
		case errors.Is(err, ErrNoTask):
			writeError(w, http.StatusNotFound, err)
		case errors.Is(err, ErrBadTransition):
			writeJSON(w, http.StatusConflict, apiError{Error: err.Error(), State: t.State})
		case err != nil:
			s.serverError(w, "changing the task", err)
		default:
			s.log.Info("http: task changed by admin", "task", t.ID, "mac", t.MAC, "state", t.State, "client", remoteIP(r))
			s.taskEnded(t, reason)
			writeJSON(w, http.StatusOK, t)
		}
	}
}
