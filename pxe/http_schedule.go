package pxe

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/wake"
)

// maxWakeMACs bounds the MACs one request names.
const maxWakeMACs = DefaultMaxMachines

// WakeRequest is the body of POST /api/wake: exactly one of MACs and
// Group.
type WakeRequest struct {
	MACs  []string `json:"macs,omitempty"`
	Group string   `json:"group,omitempty"` // every known machine of the group
}

// WakeReply answers POST /api/wake.
type WakeReply struct {
	Sent  []wake.Sent `json:"sent"`
	Error string      `json:"error,omitempty"` // destinations that failed, when others worked
}

// targetMACs resolves "macs" or "group" (exactly one), normalised and
// without duplicates. It answers the request itself on an error.
func (s *bootServer) targetMACs(w http.ResponseWriter, list []string, group string) ([]string, bool) {
	if (len(list) == 0) == (group == "") {
		writeError(w, http.StatusBadRequest, errors.New("set either macs (a list of machines) or group (every known machine of a group), not both or neither"))
		return nil, false
	}
	if group != "" {
		macs, err := s.groupMACs(group)
		if errors.Is(err, errNoGroup) {
			writeError(w, http.StatusBadRequest, err)
			return nil, false
		} else if err != nil {
			s.serverError(w, "listing machines", err)
			return nil, false
		}
		return macs, true
	}
	if len(list) > maxWakeMACs {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%d MACs: at most %d in one request", len(list), maxWakeMACs))
		return nil, false
	}
	seen := map[string]bool{}
	var macs []string
	for _, raw := range list {
		mac, err := protocol.ParseMAC(raw)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return nil, false
		}
		if !seen[mac] {
			seen[mac] = true
			macs = append(macs, mac)
		}
	}
	return macs, true
}

// serveWake answers POST /api/wake: one round of magic packets, no
// task and no retries.
func (s *bootServer) serveWake(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Wake == nil {
		writeError(w, http.StatusForbidden, ErrWakeOff)
		return
	}
	var req WakeRequest
	if !decodeJSON(w, r, s.cfg.MaxBody, &req) {
		return
	}
	macs, ok := s.targetMACs(w, req.MACs, req.Group)
	if !ok {
		return
	}
	sent, err := s.cfg.Wake.Wake(macs)
	s.log.Info("http: wake", "machines", len(macs), "packets", len(sent), "err", err, "client", remoteIP(r))
	if err != nil && len(sent) == 0 {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("no magic packet left this server: %w", err))
		return
	}
	reply := WakeReply{Sent: sent}
	if err != nil {
		reply.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, reply)
}

// CreateSchedule is the body of POST /api/schedules: when (exactly one
// of At, an RFC 3339 time such as "2026-12-04T22:00:00+01:00", and
// Weekly, a rule such as "fri 22:00" in the server's time zone: see
// ParseWeekly), for whom (exactly one of MAC, MACs and Group) and the
// task settings of POST /api/tasks, Wake included.
type CreateSchedule struct {
	Name   string   `json:"name,omitempty"`
	At     string   `json:"at,omitempty"`
	Weekly string   `json:"weekly,omitempty"`
	MACs   []string `json:"macs,omitempty"`
	CreateTasks
}

// maxScheduleAhead bounds how far ahead a one-time schedule may be.
const maxScheduleAhead = 366 * 24 * time.Hour

func (s *bootServer) scheduler(w http.ResponseWriter) (*Scheduler, bool) {
	if s.cfg.Scheduler == nil {
		writeError(w, http.StatusForbidden, errors.New("this server runs without a scheduler: schedules are off"))
		return nil, false
	}
	return s.cfg.Scheduler, true
}

// serveSchedules answers GET /api/schedules (the read API, like GET
// /api/tasks).
func (s *bootServer) serveSchedules(w http.ResponseWriter, r *http.Request) {
	st, ok := s.store(w)
	if !ok {
		return
	}
	scs, err := st.Schedules()
	if err != nil {
		s.serverError(w, "listing schedules", err)
		return
	}
	if scs == nil {
		scs = []Schedule{}
	}
	writeJSON(w, http.StatusOK, scs)
}

func (s *bootServer) serveCreateSchedule(w http.ResponseWriter, r *http.Request) {
	sch, ok := s.scheduler(w)
	if !ok {
		return
	}
	var req CreateSchedule
	if !decodeJSON(w, r, s.cfg.MaxBody, &req) {
		return
	}
	bad := func(format string, args ...any) {
		writeError(w, http.StatusBadRequest, fmt.Errorf(format, args...))
	}
	if len(req.Name) > 100 || strings.ContainsFunc(req.Name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		bad("name: at most 100 characters, no control characters")
		return
	}
	sc := Schedule{Name: req.Name, Image: req.Image, Wake: req.Wake}
	now := time.Now()
	switch {
	case (req.At == "") == (req.Weekly == ""):
		bad(`set either at (once, RFC 3339: "2026-12-04T22:00:00+01:00") or weekly (every week: "fri 22:00", "mon-fri 18:30", "daily 06:00"), not both or neither`)
		return
	case req.At != "":
		at, err := time.Parse(time.RFC3339, req.At)
		if err != nil {
			bad(`at %q: want an RFC 3339 time with its zone, such as "2026-12-04T22:00:00+01:00" or "2026-12-04T21:00:00Z"`, protocol.Clip(req.At, 60))
			return
		}
		if at.Before(now) {
			bad("at %s is in the past (the server's clock says %s)", at.Format(time.RFC3339), now.Format(time.RFC3339))
			return
		}
		if at.After(now.Add(maxScheduleAhead)) {
			bad("at %s is more than a year ahead", at.Format(time.RFC3339))
			return
		}
		sc.At, sc.Next = at.UTC(), at.UTC()
	default:
		wk, err := ParseWeekly(req.Weekly)
		if err != nil {
			bad("weekly: %v", err)
			return
		}
		sc.Weekly = wk.String()
		sc.Next = wk.Next(now, sch.Location()).UTC()
	}
	// mac (POST /api/tasks' spelling) counts as a list of one.
	list := req.MACs
	if req.MAC != "" {
		if len(list) > 0 {
			bad("set mac or macs, not both")
			return
		}
		list = []string{req.MAC}
	}
	macs, ok := s.targetMACs(w, list, req.Group)
	if !ok {
		return
	}
	if req.Group == "" {
		sc.MACs = macs // a group is resolved again when it fires
	}
	sc.Group = req.Group
	if !s.checkImage(w, req.Image) {
		return
	}
	set, err := s.taskSettings(req.CreateTasks)
	if err != nil {
		bad("%v", err)
		return
	}
	sc.TaskSettings = set
	if req.Wake && s.cfg.Wake == nil {
		writeError(w, http.StatusForbidden, fmt.Errorf("%w; the schedule was not created", ErrWakeOff))
		return
	}
	sc, err = s.cfg.Store.AddSchedule(sc)
	if errors.Is(err, ErrBadTask) {
		writeError(w, http.StatusConflict, err)
		return
	} else if err != nil {
		s.serverError(w, "storing the schedule", err)
		return
	}
	sch.Changed()
	s.log.Info("http: schedule created", "schedule", sc.ID, "next", sc.Next, "weekly", sc.Weekly, "image", sc.Image, "group", sc.Group,
		"machines", len(sc.MACs), "wake", sc.Wake, "client", remoteIP(r))
	writeJSON(w, http.StatusCreated, sc)
}

func (s *bootServer) serveDeleteSchedule(w http.ResponseWriter, r *http.Request) {
	sch, ok := s.scheduler(w)
	if !ok {
		return
	}
	sc, err := s.cfg.Store.DeleteSchedule(r.PathValue("id"))
	if errors.Is(err, ErrNoSchedule) {
		writeError(w, http.StatusNotFound, err)
		return
	} else if err != nil {
		s.serverError(w, "deleting the schedule", err)
		return
	}
	sch.Changed()
	s.log.Info("http: schedule deleted", "schedule", sc.ID, "client", remoteIP(r))
	writeJSON(w, http.StatusOK, sc)
}
