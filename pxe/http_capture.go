package pxe

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// captureIdle is how long a data request may send nothing before the
// server drops it (the uploader resumes from the offset).
const captureIdle = 30 * time.Second

// Who may call the capture routes:
//
//	POST   /api/captures               admin token: start a capture
//	GET    /api/captures[/{id}]        anyone (read API): states, no secrets
//	DELETE /api/captures/{id}          admin token: cancel an open capture
//	PUT    /api/captures/{id}/manifest the capture's upload secret
//	PUT    /api/captures/{id}/data     the capture's upload secret
//	POST   /api/captures/{id}/finish   the capture's upload secret
//
// The secret is accepted only while the capture is open (open or
// receiving): once finish is accepted, or the capture failed, it is
// spent.

// captures returns the Captures, answering 403 without.
func (s *bootServer) captures(w http.ResponseWriter) (*Captures, bool) {
	if s.cfg.Captures == nil {
		writeError(w, http.StatusForbidden, errors.New("captures are off on this server: give it a capture folder (http.capture_dir)"))
		return nil, false
	}
	return s.cfg.Captures, true
}

// uploadSecret is the request's bearer token.
func uploadSecret(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// captureError answers a Captures error.
func (s *bootServer) captureError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNoCapture):
		code = http.StatusNotFound
	case errors.Is(err, ErrCaptureSecret):
		code = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="pxeswarm capture"`)
		s.log.Warn("http: capture request without its secret refused", "path", r.URL.Path, "client", remoteIP(r))
	case errors.Is(err, ErrCaptureOffset), errors.Is(err, ErrCaptureState), errors.Is(err, ErrCaptureBusy):
		code = http.StatusConflict
	case errors.Is(err, ErrBadCapture), errors.Is(err, protocol.ErrBadManifest):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNoSpace):
		code = http.StatusInsufficientStorage
	default:
		s.log.Error("http: capture", "path", r.URL.Path, "err", err)
	}
	if st, e := s.cfg.Captures.State(r.PathValue("id")); e == nil && errors.Is(err, ErrCaptureOffset) {
		w.Header().Set(protocol.UploadOffsetHeader, strconv.FormatInt(st.Received, 10))
	}
	writeError(w, code, err)
}

// serveCreateCapture answers POST /api/captures (admin).
func (s *bootServer) serveCreateCapture(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	var req protocol.NewCapture
	if !decodeJSON(w, r, s.cfg.MaxBody, &req) {
		return
	}
	created, err := cs.Create(req)
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	s.log.Info("http: capture started by admin", "capture", created.ID, "name", created.Name, "client", remoteIP(r))
	writeJSON(w, http.StatusCreated, created)
}

func (s *bootServer) serveCaptures(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, cs.List())
}

func (s *bootServer) serveCapture(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	st, err := cs.State(r.PathValue("id"))
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	w.Header().Set(protocol.UploadOffsetHeader, strconv.FormatInt(st.Received, 10))
	writeJSON(w, http.StatusOK, st)
}

// serveCancelCapture answers DELETE /api/captures/{id} (admin).
func (s *bootServer) serveCancelCapture(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	st, err := cs.Cancel(r.PathValue("id"), "canceled by the admin API from "+remoteIP(r))
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// serveCaptureManifest answers PUT /api/captures/{id}/manifest.
func (s *bootServer) serveCaptureManifest(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	// The secret first: a request without it reads no body.
	if err := cs.Authorize(r.PathValue("id"), uploadSecret(r)); err != nil {
		s.captureError(w, r, err)
		return
	}
	m, err := protocol.ParseManifest(http.MaxBytesReader(w, r.Body, protocol.MaxManifestBytes))
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	st, err := cs.Manifest(r.PathValue("id"), uploadSecret(r), m)
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// serveCaptureData answers PUT /api/captures/{id}/data: the stream's
// bytes from Upload-Offset, which must be the server's offset. The body
// may end anywhere (the uploader goes on with another request from the
// offset the answer names); it may not go past the stream's end. What
// arrived before a connection dropped is kept.
func (s *bootServer) serveCaptureData(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	id := r.PathValue("id")
	off, err := strconv.ParseInt(r.Header.Get(protocol.UploadOffsetHeader), 10, 64)
	if err != nil || off < 0 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("send the stream offset of the body's first byte in %s (GET /api/captures/%s says where the server is)", protocol.UploadOffsetHeader, protocol.Clip(id, 40)))
		return
	}
	up, err := cs.Begin(id, uploadSecret(r), off)
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	defer up.Close()
	rc := http.NewResponseController(w)
	left := up.Left()
	body := http.MaxBytesReader(w, r.Body, left)
	buf := make([]byte, 1<<20)
	for {
		// A slow but live uploader is never cut; a silent one is after
		// captureIdle (the server's ReadTimeout would cut every upload
		// after a minute).
		rc.SetReadDeadline(time.Now().Add(captureIdle))
		n, rerr := fill(body, buf)
		if n > 0 {
			if _, err := up.Write(buf[:n]); err != nil {
				up.Close()
				s.captureError(w, r, err)
				return
			}
		}
		var tooBig *http.MaxBytesError
		switch {
		case rerr == nil:
			continue
		case rerr == io.EOF:
		case errors.As(rerr, &tooBig):
			// Free the upload slot before answering: the uploader may
			// call again as soon as it has the answer.
			w.Header().Set(protocol.UploadOffsetHeader, strconv.FormatInt(up.Offset(), 10))
			up.Close()
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("the body runs past the stream's end (%d bytes were left): the bytes up to the end were kept", left))
			return
		default:
			// The connection dropped or went silent: keep what came
			// (Close syncs it); the uploader asks for the offset.
			s.log.Info("http: capture upload cut off; it resumes from the offset", "capture", id, "offset", up.Offset(), "err", rerr, "client", remoteIP(r))
			return
		}
		break
	}
	if err := up.Close(); err != nil {
		s.captureError(w, r, err)
		return
	}
	st, _ := cs.State(id)
	w.Header().Set(protocol.UploadOffsetHeader, strconv.FormatInt(st.Received, 10))
	writeJSON(w, http.StatusOK, st)
}

// fill reads into b until it is full or the reader fails; io.EOF only
// when nothing more is to come.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// serveCaptureFinish answers POST /api/captures/{id}/finish: 202, and the
// server makes and publishes the image; GET the capture until it is
// published or failed.
func (s *bootServer) serveCaptureFinish(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	st, err := cs.Finish(r.PathValue("id"), uploadSecret(r))
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	s.log.Info("http: capture complete; making the image", "capture", st.ID, "name", st.Name, "bytes", st.Total, "client", remoteIP(r))
	writeJSON(w, http.StatusAccepted, st)
}

// createCaptureTask answers POST /api/tasks with action "capture": the
// capture is created at once (its ID is in the task; the upload secret is
// the task's report token, so only the machine's signed plan carries it)
// and the machine uploads its disk when it PXE-boots.
func (s *bootServer) createCaptureTask(w http.ResponseWriter, r *http.Request, req CreateTasks) {
	cs, ok := s.captures(w)
	if !ok {
		return
	}
	bad := func(format string, args ...any) {
		writeError(w, http.StatusBadRequest, fmt.Errorf(format, args...))
	}
	if req.MAC == "" || req.Group != "" {
		bad("a capture takes one machine, the golden one: set mac, not group")
		return
	}
	mac, err := protocol.ParseMAC(req.MAC)
	if err != nil {
		bad("%v", err)
		return
	}
	if req.Check != "" || req.CreateTable != nil || req.Discard != nil || req.SeedFor != "" {
		bad("a capture only reads the golden disk: leave out check, create_table, discard and seed_for")
		return
	}
	set := TaskSettings{After: req.After, OnError: req.OnError}
	if req.Target != nil {
		set.Target = *req.Target
	}
	set = withPlanDefaults(set, s.cfg.Defaults)
	set.CheckMode, set.CreateTable, set.Discard, set.SeedFor = "", false, false, ""
	if err := s.checkSettings(TaskSettings{Target: set.Target, CheckMode: "fresh", After: set.After, OnError: set.OnError}); err != nil {
		bad("%v", err)
		return
	}
	if active, ok, err := s.cfg.Store.ActiveTask(mac); err != nil {
		s.serverError(w, "looking up the machine's task", err)
		return
	} else if ok {
		writeError(w, http.StatusConflict, fmt.Errorf("%w: %s has task %s (%s, image %s): cancel it first (POST /api/tasks/%s/cancel) or wait for it to finish",
			ErrActiveTask, mac, active.ID, active.State, active.Image, active.ID))
		return
	}
	secret, err := protocol.NewReportToken()
	if err != nil {
		s.serverError(w, "making the upload secret", err)
		return
	}
	created, err := cs.CreateWithSecret(protocol.NewCapture{Name: req.Image, MAC: mac, Disk: "pxe " + set.Target.String()}, secret)
	if err != nil {
		s.captureError(w, r, err)
		return
	}
	t, err := s.cfg.Store.AddTaskWithToken(Task{MAC: mac, Image: req.Image, TaskSettings: set, Action: protocol.ActionCapture,
		Capture: created.ID, Raw: req.Raw}, secret)
	if err != nil {
		if _, cerr := cs.Cancel(created.ID, "its task could not be created: "+err.Error()); cerr != nil {
			s.log.Warn("http: dropping the capture of a task not created", "capture", created.ID, "err", cerr)
		}
		s.tasksAdded(w, err)
		return
	}
	s.log.Info("http: capture task created", "task", t.ID, "mac", mac, "name", req.Image, "capture", created.ID, "client", remoteIP(r))
	writeJSON(w, http.StatusCreated, CreatedTasks{Tasks: []Task{t}})
}

// capturePlan is a capture task's plan, or an error the plan request
// answers: the capture must still be open (a failed or expired capture
// needs a new task).
func (s *bootServer) capturePlan(task Task) (*protocol.Plan, int, error) {
	if s.cfg.Captures == nil {
		return nil, http.StatusConflict, fmt.Errorf("task %s is a capture but captures are off on this server (http.capture_dir): cancel the task", task.ID)
	}
	st, err := s.cfg.Captures.State(task.Capture)
	if err != nil || !st.State.Open() {
		why := "is gone"
		if err == nil {
			why = "is " + string(st.State)
			if st.Error != "" {
				why += " (" + st.Error + ")"
			}
		}
		return nil, http.StatusConflict, fmt.Errorf("task %s's capture %s %s: cancel the task (POST /api/tasks/%s/cancel) and create a new capture", task.ID, task.Capture, why, task.ID)
	}
	return &protocol.Plan{
		MAC: task.MAC, TaskID: task.ID, Action: protocol.ActionCapture, Image: task.Image, CaptureID: task.Capture, Raw: task.Raw,
		Target: task.Target, After: task.After, OnError: task.OnError,
	}, 0, nil
}

// captureDoneAllowed checks a capture task's done report: the capture is
// published, and the report names the published torrent's info-hash.
func (s *bootServer) captureDoneAllowed(w http.ResponseWriter, task Task, rep protocol.Report) bool {
	var st protocol.CaptureState
	var err error
	if s.cfg.Captures != nil {
		st, err = s.cfg.Captures.State(task.Capture)
	}
	if s.cfg.Captures == nil || err != nil || st.State != protocol.CapturePublished {
		writeError(w, http.StatusConflict, fmt.Errorf("task %s's capture %s is not published: a capture task is done only once the server published the image (POST /api/captures/{id}/finish)", task.ID, task.Capture))
		return false
	}
	if !slices.Contains(strings.Fields(rep.Message), "infohash="+st.InfoHash) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("a capture's done report names the published image (infohash=%s in message)", st.InfoHash))
		return false
	}
	return true
}

// taskEnded drops the capture of a capture task that ended without it
// (canceled, failed): what it staged is removed and its secret is spent.
func (s *bootServer) taskEnded(t Task, why string) {
	if !t.IsCapture() || t.State.Active() || t.State == protocol.TaskDone || s.cfg.Captures == nil {
		return
	}
	st, err := s.cfg.Captures.State(t.Capture)
	if err != nil || !st.State.Open() {
		return
	}
	if why == "" {
		why = "its task " + t.ID + " " + string(t.State)
	}
	if _, err := s.cfg.Captures.Cancel(t.Capture, why); err != nil {
		s.log.Warn("http: dropping the capture of an ended task", "task", t.ID, "capture", t.Capture, "err", err)
	}
}
