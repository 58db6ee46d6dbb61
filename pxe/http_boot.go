package pxe

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// routes registers every path. Go 1.22 patterns need a wildcard to be a
// whole segment, so "/boot/{mac}.ipxe" and "/torrents/{name}.torrent"
// are matched as one segment and split in the handlers.
func (s *bootServer) routes() *http.ServeMux {
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	handle := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
		allowed[path] = append(allowed[path], method)
	}
	handle("GET", "/boot/{file}", s.serveBoot)
	handle("GET", "/grub/{file}", s.serveGrub)
	handle("GET", "/torrents/{file}", s.serveTorrent)
	handle("GET", "/images/{image}/{path...}", s.serveImageData)
	handle("GET", "/plan/{mac}", s.servePlan)
	handle("POST", "/api/report/{mac}", s.serveReport)
	handle("GET", "/api/machines", s.serveMachines)
	handle("GET", "/api/machines/{mac}", s.serveMachine)
	handle("GET", "/api/tasks", s.serveTasks)
	handle("GET", "/api/swarms", s.serveSwarms)
	handle("GET", "/api/swarm", s.serveSwarmGraphs)
	handle("GET", "/api/status", s.serveStatus)
	handle("GET", "/api/images", s.serveImages)
	handle("POST", "/api/images", s.admin(s.serveAddImage))
	handle("DELETE", "/api/images/{name}", s.admin(s.serveRemoveImage))
	handle("GET", "/api/captures", s.serveCaptures)
	handle("POST", "/api/captures", s.admin(s.serveCreateCapture))
	handle("GET", "/api/captures/{id}", s.serveCapture)
	handle("DELETE", "/api/captures/{id}", s.admin(s.serveCancelCapture))
	handle("PUT", "/api/captures/{id}/manifest", s.serveCaptureManifest)
	handle("PUT", "/api/captures/{id}/data", s.serveCaptureData)
	handle("POST", "/api/captures/{id}/finish", s.serveCaptureFinish)
	handle("POST", "/api/tasks", s.admin(s.serveCreateTasks))
	handle("POST", "/api/tasks/{id}/cancel", s.admin(s.serveTaskTo(protocol.TaskCanceled)))
	handle("POST", "/api/tasks/{id}/done", s.admin(s.serveTaskTo(protocol.TaskDone)))
	if s.console != nil {
		s.console.Register(handle)
	}
	handle("POST", "/api/wake", s.admin(s.serveWake))
	handle("GET", "/api/schedules", s.serveSchedules)
	handle("POST", "/api/schedules", s.admin(s.serveCreateSchedule))
	handle("DELETE", "/api/schedules/{id}", s.admin(s.serveDeleteSchedule))
	// The catch-all "/" below would swallow wrong methods as 404; answer
	// them 405 with Allow instead.
	for path, methods := range allowed {
		allow := strings.Join(methods, ", ")
		if slices.Contains(methods, "GET") {
			allow += ", HEAD"
		}
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed here: use %s", protocol.Clip(r.Method, 10), allow))
		})
	}
	if s.cfg.Tracker != nil {
		for _, p := range []string{"/announce", "/scrape", "/stats"} {
			mux.Handle(p, s.cfg.Tracker)
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such path %q: see GET /api/status", protocol.Clip(r.URL.Path, 100)))
	})
	return mux
}

// remoteIP is the client's address without port ("" if unparsable).
func remoteIP(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return ap.Addr().Unmap().String()
}

// writeJSON answers v as indented JSON with no caching: everything the
// JSON routes return changes from one second to the next.
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error": "encoding the reply failed: report this as a bug"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// apiError is every JSON error reply.
type apiError struct {
	Error string             `json:"error"`
	State protocol.TaskState `json:"state,omitempty"` // the task's state, when a state change was refused
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apiError{Error: err.Error()})
}

// decodeJSON reads one JSON object from the body into v: at most limit
// bytes, no unknown fields, nothing after it. It answers the error itself
// (400, or 413 for a body over the limit) and returns false then.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err2 := dec.Token(); err2 != io.EOF {
			err = errors.New("more data after the JSON object")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("body is larger than %d bytes", limit))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, errors.New("empty body: send a JSON object"))
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("body is not the expected JSON object: %v", err))
	}
	return false
}

// macParam reads and normalises the {mac} path wildcard, answering 400
// if it is not a MAC.
func macParam(w http.ResponseWriter, r *http.Request, raw string) (string, bool) {
	mac, err := protocol.ParseMAC(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return "", false
	}
	return mac, true
}

func (s *bootServer) serveBoot(w http.ResponseWriter, r *http.Request) {
	switch file := r.PathValue("file"); {
	case file == "vmlinuz":
		s.serveFile(w, r, s.cfg.Kernel, "kernel", nil)
	case file == "initramfs":
		s.serveFile(w, r, s.cfg.Initramfs, "initramfs", s.cfg.InitramfsAppend)
	case file == ShimName:
		s.serveFile(w, r, s.cfg.Shim, "shim", nil)
	case file == GrubName:
		s.serveFile(w, r, s.cfg.Grub, "GRUB", nil)
	case file == IPXEName:
		s.serveFile(w, r, s.cfg.IPXE, "iPXE", nil)
	case strings.HasSuffix(file, ".ipxe"):
		s.serveScript(w, r, strings.TrimSuffix(file, ".ipxe"))
	default:
		writeError(w, http.StatusNotFound, fmt.Errorf("no boot file %q: want vmlinuz, initramfs, "+ShimName+", "+GrubName+" or <mac>.ipxe", protocol.Clip(file, 60)))
	}
}

// serveFile sends a kernel or initramfs with http.ServeContent, so Range
// and If-Modified-Since work; the file is opened per request, so a
// rebuilt initramfs is served without a restart. A non-empty tail follows
// the file's bytes, after zeros up to a 4-byte boundary (see
// HTTPConfig.InitramfsAppend).
func (s *bootServer) serveFile(w http.ResponseWriter, r *http.Request, path, what string, tail []byte) {
	if path == "" {
		writeError(w, http.StatusNotFound, fmt.Errorf("no %s configured on this server: set its path in the config", what))
		return
	}
	f, err := os.Open(path)
	if err != nil {
		s.log.Error("http: cannot open boot file", "file", path, "err", err)
		writeError(w, http.StatusNotFound, fmt.Errorf("%s is missing on the server: rebuild it or fix the path", what))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		writeError(w, http.StatusNotFound, fmt.Errorf("%s on the server is not a regular file", what))
		return
	}
	s.log.Info("http: boot file", "file", what, "client", remoteIP(r), "range", r.Header.Get("Range"))
	w.Header().Set("Content-Type", "application/octet-stream")
	if len(tail) == 0 {
		http.ServeContent(w, r, "", st.ModTime(), f)
		return
	}
	joined := appendedFile{f: f, size: st.Size(), tail: tail}
	http.ServeContent(w, r, "", st.ModTime(), io.NewSectionReader(joined, 0, joined.len()))
}

// appendedFile reads as a file's size bytes, zeros up to a multiple of 4,
// then tail: the kernel looks for a following cpio archive only at a
// 4-byte-aligned offset and skips zeros before it (init/initramfs.c).
type appendedFile struct {
	f    io.ReaderAt
	size int64
	tail []byte
}

func (a appendedFile) pad() int64 { return (4 - a.size%4) % 4 }

func (a appendedFile) len() int64 { return a.size + a.pad() + int64(len(a.tail)) }

func (a appendedFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		at := off + int64(n)
		var m int
		switch {
		case at < a.size:
			want := p[n:min(len(p), n+int(a.size-at))]
			k, err := a.f.ReadAt(want, at)
			if k < len(want) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF // the file shrank while being sent
				}
				return n + k, err
			}
			m = k
		case at < a.size+a.pad():
			m = int(min(int64(len(p)-n), a.size+a.pad()-at))
			clear(p[n : n+m])
		case at < a.len():
			m = copy(p[n:], a.tail[at-a.size-a.pad():])
		default:
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

// serveScript answers GET /boot/{mac}.ipxe with an iPXE script. A machine
// with an active task gets our kernel and initramfs; everything else
// (unknown machine, no task, task finished, a server error) gets a script
// that exits to the firmware, which boots the next device: the local
// disk. A terminal that is in no task must never be wiped.
//
// Active here means pending, booting, imaging or seeding: a machine that
// reboots mid-task (power cut, agent crash) retries, because its disk may
// be half-written and booting it would be worse.
//
// Like every GET it changes nothing: any LAN host can ask for any MAC's
// script. The task becomes booting on the agent's first report with the
// task's token (after its plan verified).
func (s *bootServer) serveScript(w http.ResponseWriter, r *http.Request, raw string) {
	mac, ok := macParam(w, r, raw)
	if !ok {
		return
	}
	ip := remoteIP(r)
	var script string
	task, ok, err := s.backend.ActiveTask(mac)
	switch {
	case err != nil:
		s.log.Error("http: looking up task; sending local-disk script", "mac", mac, "err", err)
		script = localDiskScript(mac, "server error looking up its task (see the server log)")
	case !ok || !task.State.Active():
		s.log.Info("http: no task; local disk", "mac", mac, "client", ip)
		script = localDiskScript(mac, "no task")
	default:
		s.log.Info("http: agent script", "mac", mac, "client", ip, "task", task.ID, "state", task.State, "image", task.Image)
		script = s.agentScript(mac, task)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, script)
}

// localDiskScript asks iPXE to return to the firmware, which then tries
// its next boot device; the local disk should follow the network in the
// boot order. It exits with status 1, since a UEFI boot manager only moves
// on to the next Boot#### entry when an entry fails. That is best effort:
// SeaBIOS moves on, but Debian's iPXE under OVMF was seen to stay in iPXE
// after `exit` and `exit 1` alike, so machines without a task get no boot
// file from DHCP in the first place (dhcp.Config.Boot) and rarely get here.
func localDiskScript(mac, why string) string {
	return fmt.Sprintf("#!ipxe\necho pxeswarm: %s for %s, booting local disk\nexit 1\n", why, mac)
}

// agentScript boots our kernel and initramfs. The initramfs is named
// "initramfs" with initrd --name and the kernel gets initrd=initramfs:
// under UEFI the kernel's EFI stub then loads it by that name from iPXE's
// file system. Kernels before 5.7, and iPXE builds without LoadFile2
// initrd support, need that; measured: Debian's iPXE (git 20190125) under
// OVMF with Linux 6.1 boots without any initramfs if the argument is
// missing ("VFS: Unable to mount root fs"; seen by hand and in the first
// firmware tests, which now pass with it).
// BIOS boots ignore the argument.
// The rest of the command line is kernelArgs, shared with GRUB.
func (s *bootServer) agentScript(mac string, t Task) string {
	u := s.cfg.PublicURL
	var b bytes.Buffer
	fmt.Fprintf(&b, "#!ipxe\n")
	fmt.Fprintf(&b, "echo pxeswarm: task %s for %s: image %s\n", t.ID, mac, t.Image)
	args := append([]string{"initrd=initramfs"}, s.kernelArgs(mac, t)...)
	fmt.Fprintf(&b, "kernel %s/boot/vmlinuz %s\n", u, strings.Join(args, " "))
	fmt.Fprintf(&b, "initrd --name initramfs %s/boot/initramfs\n", u)
	fmt.Fprintf(&b, "boot\n")
	return b.String()
}

// serveTorrent answers GET /torrents/{name}.torrent.
func (s *bootServer) serveTorrent(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("file"), ".torrent")
	im, found := s.cat.Get(name)
	if !ok || !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("no image %q on this server: see GET /api/images for the published images", protocol.Clip(name, 60)))
		return
	}
	body, err := s.torrentFile(im)
	if err != nil {
		s.serverError(w, "encoding the torrent", err)
		return
	}
	w.Header().Set("Content-Type", "application/x-bittorrent")
	http.ServeContent(w, r, "", im.ModTime, bytes.NewReader(body))
}

// serveImageData is the BEP 19 web seed. For a multi-file torrent (every
// image torrent is one) a client appends the torrent's name and the file's
// path to the url-list entry, each component path-escaped (anacrolix:
// webseed.urlForFileIndex), and asks for pieces with Range, so the URL is
// /images/{image}/{torrent name}/{file path}. The mux has unescaped the
// wildcards already.
func (s *bootServer) serveImageData(w http.ResponseWriter, r *http.Request) {
	si, ok := s.cat.Get(r.PathValue("image"))
	if !ok || !s.webSeeded(si) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no web seed for image %q on this server", protocol.Clip(r.PathValue("image"), 60)))
		return
	}
	rest := r.PathValue("path")
	for i, f := range si.Image.Files {
		if rest != si.Image.Name+"/"+f.Path {
			continue
		}
		fh, err := os.Open(si.Source[i])
		if err != nil {
			s.log.Error("http: web seed data", "image", si.Name, "file", si.Source[i], "err", err)
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("image data of %s is not readable on the server", si.Name))
			return
		}
		defer fh.Close()
		var mod time.Time
		if st, err := fh.Stat(); err == nil && st.Mode().IsRegular() {
			mod = st.ModTime()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		// Serve exactly the torrent file's bytes: a partition device may
		// be longer than the file, and a used-block file is the used
		// extents of its source, packed.
		http.ServeContent(w, r, "", mod, io.NewSectionReader(imager.OnExtents(fh, f.Part.Extents), 0, f.Length))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("image %s has no file %q", si.Name, protocol.Clip(rest, 100)))
}

// servePlan answers GET /plan/{mac} with the signed plan of the machine's
// active task. Fetching the plan does not change the task's state: GET
// stays safe to repeat, and an agent that fetches a plan but cannot verify
// it has not started imaging. The agent's reports move the task on.
func (s *bootServer) servePlan(w http.ResponseWriter, r *http.Request) {
	mac, ok := macParam(w, r, r.PathValue("mac"))
	if !ok {
		return
	}
	nonce := r.URL.Query().Get(protocol.NonceParam)
	if !protocol.IsHex(nonce, 32, 128) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("plan request without a nonce (?%s= 32-128 hex digits): the agent sends one; an agent that does not is older than this server: rebuild the initramfs (pxeswarm build initramfs)", protocol.NonceParam))
		return
	}
	task, ok, err := s.backend.ActiveTask(mac)
	if err != nil {
		s.log.Error("http: looking up task", "mac", mac, "err", err)
		writeError(w, http.StatusInternalServerError, errors.New("server error looking up the task: see the server log"))
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no active task for %s: create one with POST /api/tasks", mac))
		return
	}
	var p *protocol.Plan
	if task.IsCapture() {
		var code int
		if p, code, err = s.capturePlan(task); err != nil {
			s.log.Warn("http: no plan for a capture task", "mac", mac, "task", task.ID, "err", err)
			writeError(w, code, err)
			return
		}
	} else {
		si, ok := s.cat.Get(task.Image)
		if !ok {
			s.log.Error("http: task names an image not served", "mac", mac, "task", task.ID, "image", task.Image)
			writeError(w, http.StatusConflict, fmt.Errorf("task %s wants image %q, which this server does not publish: add it (POST /api/images, or the config) or cancel the task", task.ID, task.Image))
			return
		}
		set := withPlanDefaults(task.TaskSettings, s.cfg.Defaults)
		p = &protocol.Plan{
			MAC: mac, TaskID: task.ID, Action: protocol.ActionDeploy, Image: task.Image,
			Torrent: s.torrentURL(task.Image), InfoHash: si.Image.InfoHash.HexString(),
			Trackers: s.cfg.Trackers, Seeders: s.seeders(task.Image), Target: set.Target, CreateTable: set.CreateTable, Discard: set.Discard,
			CheckMode: set.CheckMode, SeedFor: set.SeedFor, After: set.After, OnError: set.OnError,
		}
	}
	p.Issued, p.Nonce = time.Now().UTC(), nonce
	if p.ReportToken, err = s.backend.ReportToken(task.ID); err != nil {
		s.log.Error("http: report token", "mac", mac, "task", task.ID, "err", err)
		writeError(w, http.StatusInternalServerError, errors.New("server error reading the task's report token: see the server log"))
		return
	}
	body, err := protocol.Sign(p, s.cfg.Key)
	if err != nil {
		s.log.Error("http: signing plan", "mac", mac, "task", task.ID, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Errorf("task %s does not make a valid plan (%v): cancel it and create it again", task.ID, err))
		return
	}
	s.log.Info("http: plan", "mac", mac, "task", task.ID, "action", p.Action, "image", task.Image, "client", remoteIP(r))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}

// reportAllowed checks a report on a task before anything is stored: it
// must carry the task's report token (which only the task's signed plan
// delivers), and a "done" must name the info-hash of the task's image,
// as the agent's does after it read the image back. It answers the
// request itself when it refuses.
func (s *bootServer) reportAllowed(w http.ResponseWriter, r *http.Request, mac string, rep protocol.Report) bool {
	notOurs := fmt.Errorf("%w: task %q is not a task of %s: send the task_id of this machine's plan", ErrNoTask, protocol.Clip(rep.TaskID, 64), mac)
	want, err := s.backend.ReportToken(rep.TaskID)
	if errors.Is(err, ErrNoTask) {
		writeError(w, http.StatusBadRequest, notOurs)
		return false
	}
	if err != nil {
		s.log.Error("http: report token", "mac", mac, "task", rep.TaskID, "err", err)
		writeError(w, http.StatusInternalServerError, errors.New("server error reading the task's report token: see the server log"))
		return false
	}
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		s.log.Warn("http: report without the task's token refused", "mac", mac, "task", rep.TaskID, "phase", rep.Phase, "client", remoteIP(r))
		writeError(w, http.StatusUnauthorized, fmt.Errorf("a report on task %s needs the task's report token (Authorization: Bearer …), which only its signed plan carries", protocol.Clip(rep.TaskID, 64)))
		return false
	}
	task, err := s.backend.Task(rep.TaskID)
	if err != nil || task.MAC != mac {
		writeError(w, http.StatusBadRequest, notOurs)
		return false
	}
	if rep.Phase != protocol.PhaseDone {
		return true
	}
	if task.IsCapture() {
		return s.captureDoneAllowed(w, task, rep)
	}
	si, ok := s.cat.Get(task.Image)
	if !ok {
		writeError(w, http.StatusConflict, fmt.Errorf("task %s's image %q is not served any more: a done report cannot be checked; cancel the task", task.ID, task.Image))
		return false
	}
	if ih := si.Image.InfoHash.HexString(); !slices.Contains(strings.Fields(rep.Message), "infohash="+ih) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("a done report names the image it wrote (infohash=%s in message), as the agent does after reading it back", ih))
		return false
	}
	return true
}

// reportReply answers an accepted report.
type reportReply struct {
	TaskID string             `json:"task_id,omitempty"`
	State  protocol.TaskState `json:"state,omitempty"`
}

// serveReport answers POST /api/report/{mac}: the agent's status. A task
// that was canceled (or otherwise finished) answers 409 with its state, so
// the agent knows to stop.
func (s *bootServer) serveReport(w http.ResponseWriter, r *http.Request) {
	mac, ok := macParam(w, r, r.PathValue("mac"))
	if !ok {
		return
	}
	// Only JSON: a web page can send text/plain across sites without
	// asking, never application/json.
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, errors.New("reports are JSON: send Content-Type: application/json"))
		return
	}
	var rep protocol.Report
	if !decodeJSON(w, r, s.cfg.MaxBody, &rep) {
		return
	}
	rep.At, rep.From = time.Time{}, remoteIP(r)
	if err := rep.Check(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if rep.TaskID != "" && !s.reportAllowed(w, r, mac, rep) {
		return
	}
	task, err := s.backend.Report(mac, rep)
	switch {
	case err == nil:
	case errors.Is(err, protocol.ErrBadReport), errors.Is(err, ErrNoTask), errors.Is(err, protocol.ErrBadMAC):
		writeError(w, http.StatusBadRequest, err)
		return
	case errors.Is(err, ErrNoMachine):
		writeError(w, http.StatusNotFound, err)
		return
	case errors.Is(err, ErrBadTransition):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error(), State: task.State})
		return
	default:
		s.log.Error("http: storing report", "mac", mac, "err", err)
		writeError(w, http.StatusInternalServerError, errors.New("server error storing the report: see the server log"))
		return
	}
	level := slog.LevelDebug
	switch rep.Phase {
	case protocol.PhaseBooting, protocol.PhaseDone, protocol.PhaseFailed:
		level = slog.LevelInfo
	}
	s.log.Log(r.Context(), level, "http: report", "mac", mac, "task", task.ID, "phase", rep.Phase, "state", task.State,
		"done", rep.BytesDone, "total", rep.BytesTotal, "peers", rep.Peers, "error", rep.Error)
	if rep.TaskID != "" {
		// reportAllowed checked the task's token: only then does the
		// report count for who fed whom.
		s.flows.record(mac, task, rep.From, rep, time.Now())
	}
	s.taskEnded(task, "")
	writeJSON(w, http.StatusOK, reportReply{TaskID: task.ID, State: task.State})
}
