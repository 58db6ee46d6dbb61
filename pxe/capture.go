package pxe

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/atomicfile"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/usedmap"
)

// Captures are the server's side of image capture (protocol/capture.go
// describes the exchange): it keeps each capture's state, stages the
// received partitions as sparse files, re-hashes them into an image
// torrent of its own and publishes it in the catalog.
//
// On disk, under Dir:
//
//	staging/<id>/capture.json   the capture's record (state, manifest,
//	                            received offset, the secret's SHA-256)
//	staging/<id>/p<N>.img       partition N, sparse, at its full size
//	images/<name>/…             a published capture: the same files, the
//	                            torrent (image.torrent) and the record
//
// A capture that fails, is canceled or expires has its staging removed;
// only a capture whose finish succeeded reaches images/, and only from
// there does anything reach the catalog. Published captures are added to
// the catalog again when the server starts.
type Captures struct {
	cfg CaptureConfig
	log *slog.Logger

	mu        sync.Mutex
	caps      map[string]*capture
	finishing map[string]bool // image names being published
	wg        sync.WaitGroup
}

// CaptureConfig configures captures.
type CaptureConfig struct {
	// Dir holds staging and published captures (<state_dir>/captures by
	// default). Its file system must have room for the images: a capture
	// is refused (507) before any data when it does not.
	Dir string
	// Catalog is where finished captures are published. Required.
	Catalog *catalog.Catalog
	// Trackers are the announce URLs put into captured torrents.
	Trackers []string
	// Margin is the free space kept on Dir's file system beyond what open
	// captures still need; 0 means DefaultCaptureMargin.
	Margin int64
	// Expire drops an open capture that received nothing for this long;
	// 0 means DefaultCaptureExpire.
	Expire time.Duration
	// SyncEvery is how many received bytes pass between fsyncs of the
	// staged files and the record (the offset a restarted server resumes
	// from); 0 means 64 MiB.
	SyncEvery int64
	// MaxOpen bounds the captures open at once; 0 means 8.
	MaxOpen int
	// Ctx bounds the finishing (hashing, publishing) goroutines; nil:
	// context.Background.
	Ctx context.Context
}

// Defaults of CaptureConfig.
const (
	DefaultCaptureMargin = 256 << 20
	DefaultCaptureExpire = 24 * time.Hour
)

// Sentinel errors the HTTP side maps to status codes.
var (
	// ErrNoSpace: the capture dir's file system cannot hold the capture
	// (507).
	ErrNoSpace = errors.New("not enough free space for the capture")
	// ErrNoCapture: no capture of that ID (404).
	ErrNoCapture = errors.New("no such capture")
	// ErrCaptureState: the call does not fit the capture's state (409).
	ErrCaptureState = errors.New("capture is not in a state for this")
	// ErrCaptureSecret: the upload secret is missing or wrong (401).
	ErrCaptureSecret = errors.New("missing or wrong capture secret")
	// ErrCaptureOffset: data sent at another offset than the server's (409).
	ErrCaptureOffset = errors.New("upload offset does not match")
	// ErrCaptureBusy: another upload runs on the capture (409).
	ErrCaptureBusy = errors.New("another upload is in progress")
	// ErrBadCapture: the request is malformed (400).
	ErrBadCapture = errors.New("bad capture request")
)

// captureRecord is a capture as kept in capture.json.
type captureRecord struct {
	protocol.CaptureState
	SecretSum string `json:"secret_sha256,omitempty"` // hex; empty once spent
	// Manifest is kept in manifest.json beside the record, written once:
	// the record is rewritten at every sync, and a manifest can be tens
	// of MiB.
	Manifest *protocol.Manifest `json:"-"`
	Created  time.Time          `json:"created"`
	Touched  time.Time          `json:"touched"`
}

// capture is one capture. mu guards everything but busy; busy is held by
// the one data upload that may run.
type capture struct {
	busy sync.Mutex

	mu      sync.Mutex
	rec     captureRecord
	dir     string
	files   []*os.File
	parts   []imager.ReadWriterAt // the files seen through their extents
	starts  []int64               // stream offset of each part
	synced  int64                 // Received when last synced
	removed bool
}

// OpenCaptures loads the captures under cfg.Dir: open ones resume where
// their last sync left them, ones that were hashing when the server
// stopped are finished again in the background, and published ones are
// added to the catalog (an image that no longer loads is logged and left
// out).
func OpenCaptures(cfg CaptureConfig, log *slog.Logger) (*Captures, error) {
	if cfg.Dir == "" || cfg.Catalog == nil {
		return nil, fmt.Errorf("captures: need a folder and a catalog")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Margin <= 0 {
		cfg.Margin = DefaultCaptureMargin
	}
	if cfg.Expire <= 0 {
		cfg.Expire = DefaultCaptureExpire
	}
	if cfg.SyncEvery <= 0 {
		cfg.SyncEvery = 64 << 20
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = 8
	}
	if cfg.Ctx == nil {
		cfg.Ctx = context.Background()
	}
	cs := &Captures{cfg: cfg, log: log, caps: map[string]*capture{}, finishing: map[string]bool{}}
	for _, sub := range []string{"staging", "images"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("captures: %w (set http.capture_dir to a writable folder)", err)
		}
	}
	staged, _ := filepath.Glob(filepath.Join(cfg.Dir, "staging", "*", "capture.json"))
	for _, p := range staged {
		if err := cs.resume(filepath.Dir(p)); err != nil {
			log.Warn("captures: dropping a staged capture that cannot resume", "dir", filepath.Dir(p), "err", err)
			os.RemoveAll(filepath.Dir(p))
		}
	}
	published, _ := filepath.Glob(filepath.Join(cfg.Dir, "images", "*", "capture.json"))
	for _, p := range published {
		rec, err := readRecord(p)
		dir := filepath.Dir(p)
		if err == nil && rec.State != protocol.CapturePublished {
			// The server stopped while it published this one: it never
			// was, and its uploader was told so (or asks again and
			// starts over).
			log.Warn("captures: removing a capture that was not published when the server stopped", "dir", dir, "state", rec.State)
			os.RemoveAll(dir)
			continue
		}
		if err != nil || rec.Manifest == nil {
			log.Warn("captures: skipping a published capture whose record does not read", "file", p, "err", err)
			continue
		}
		c := &capture{rec: rec, dir: dir}
		spec := catalog.Spec{Name: rec.Image, Torrent: filepath.Join(dir, "image.torrent"), Source: partPaths(dir, rec.Manifest)}
		if _, err := cfg.Catalog.Add(cfg.Ctx, spec); err != nil {
			log.Error("captures: a captured image does not load; not published", "image", rec.Image, "dir", dir, "err", err)
			continue
		}
		cs.caps[rec.ID] = c
	}
	// A captured image deleted from the catalog (DELETE /api/images/NAME)
	// is deleted from disk, so it does not come back at the next start.
	// Followers learn of a removal in the reverse order of Follow: the
	// seeders, which follow later, have stopped reading it by then.
	if _, err := cfg.Catalog.Follow(catalog.Follower{Added: func(*catalog.Image) error { return nil }, Removed: cs.removed}); err != nil {
		return nil, err
	}
	for _, c := range cs.caps {
		if c.rec.State == protocol.CaptureHashing {
			cs.wg.Add(1)
			go func() {
				defer cs.wg.Done()
				cs.finish(c)
			}()
		}
	}
	return cs, nil
}

// removed deletes the files of a published capture the catalog dropped.
func (cs *Captures) removed(im *catalog.Image) {
	// Never a capture's lock under cs.mu (see Create).
	cs.mu.Lock()
	all := make(map[string]*capture, len(cs.caps))
	for id, c := range cs.caps {
		all[id] = c
	}
	cs.mu.Unlock()
	var found *capture
	for id, c := range all {
		if st := c.state(); st.State == protocol.CapturePublished && st.Image == im.Name {
			found = c
			cs.mu.Lock()
			delete(cs.caps, id)
			cs.mu.Unlock()
		}
	}
	if found == nil {
		return
	}
	if err := os.RemoveAll(found.dir); err != nil {
		cs.log.Error("captures: the image was removed from the catalog, but its files stay", "image", im.Name, "dir", found.dir, "err", err)
		return
	}
	cs.log.Info("captures: image removed; its files are deleted", "image", im.Name, "dir", found.dir)
}

// Wait waits for finishing captures (after Ctx is done, they stop soon).
func (cs *Captures) Wait() { cs.wg.Wait() }

func readRecord(path string) (captureRecord, error) {
	var rec captureRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if len(b) > 1<<20 {
		return rec, fmt.Errorf("%s is too large", path)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, err
	}
	mf, err := os.Open(filepath.Join(filepath.Dir(path), "manifest.json"))
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, err
	}
	defer mf.Close()
	if rec.Manifest, err = protocol.ParseManifest(mf); err != nil {
		return rec, err
	}
	return rec, nil
}

// resume loads a staged capture.
func (cs *Captures) resume(dir string) error {
	rec, err := readRecord(filepath.Join(dir, "capture.json"))
	if err != nil {
		return err
	}
	if filepath.Base(dir) != rec.ID || !protocol.ValidCaptureID(rec.ID) {
		return fmt.Errorf("record of capture %q in folder %s", rec.ID, filepath.Base(dir))
	}
	c := &capture{rec: rec, dir: dir}
	switch rec.State {
	case protocol.CaptureOpen:
	case protocol.CaptureHashing:
		// Its secret is spent: finish it again (OpenCaptures starts it).
		if rec.Manifest == nil || rec.Received != rec.Manifest.Total() {
			return errors.New("hashing without all its data")
		}
	case protocol.CaptureReceiving:
		if rec.Manifest == nil || rec.Received < 0 || rec.Received > rec.Manifest.Total() {
			return errors.New("no manifest or a bad offset")
		}
		if err := c.openFiles(false); err != nil {
			return err
		}
		c.synced = rec.Received
	default:
		return fmt.Errorf("state %s", rec.State)
	}
	cs.caps[rec.ID] = c
	cs.log.Info("captures: resuming a staged capture", "capture", rec.ID, "name", rec.Name, "received", rec.Received, "total", rec.Total)
	return nil
}

// partPaths are the staged files of a manifest's parts, in order.
func partPaths(dir string, m *protocol.Manifest) []string {
	var ps []string
	for _, p := range m.Parts {
		ps = append(ps, filepath.Join(dir, fmt.Sprintf("p%d.img", p.Number)))
	}
	return ps
}

// openFiles opens (create: makes, sparse at full size) the part files
// and maps the stream onto them.
func (c *capture) openFiles(create bool) error {
	m := c.rec.Manifest
	var at int64
	for i, path := range partPaths(c.dir, m) {
		p := m.Parts[i]
		flag := os.O_RDWR
		if create {
			flag |= os.O_CREATE | os.O_EXCL
		}
		f, err := os.OpenFile(path, flag, 0o600)
		if err != nil {
			c.closeFiles()
			return err
		}
		c.files = append(c.files, f)
		if create {
			if err := f.Truncate(p.Size); err != nil {
				c.closeFiles()
				return fmt.Errorf("make a sparse file of %s for partition %d: %w", bytesize.Format(p.Size), p.Number, err)
			}
		} else if st, err := f.Stat(); err != nil || st.Size() != p.Size {
			c.closeFiles()
			return fmt.Errorf("staged file %s is not %d bytes", path, p.Size)
		}
		c.parts = append(c.parts, imager.OnExtents(f, imager.ExtentsOf(p.Extents)))
		c.starts = append(c.starts, at)
		at += p.Length()
	}
	return nil
}

func (c *capture) closeFiles() {
	for _, f := range c.files {
		f.Close()
	}
	c.files, c.parts, c.starts = nil, nil, nil
}

// save writes the record (the caller holds c.mu).
func (c *capture) save() error {
	b, err := json.Marshal(c.rec)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(c.dir, "capture.json"), b, 0o600)
}

// sync flushes the staged files, then records the offset they hold (the
// caller holds c.mu).
func (c *capture) sync() error {
	for _, f := range c.files {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := c.save(); err != nil {
		return err
	}
	c.synced = c.rec.Received
	return nil
}

// state returns the public state.
func (c *capture) state() protocol.CaptureState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec.CaptureState
}

// Create starts a capture of an image called req.Name and returns it with
// its upload secret.
func (cs *Captures) Create(req protocol.NewCapture) (protocol.CaptureCreated, error) {
	return cs.CreateWithSecret(req, "")
}

// CreateWithSecret is Create with a given upload secret (hex, 32-128
// digits): a capture task's report token, which its signed plan carries
// to the agent. Empty makes a fresh one.
func (cs *Captures) CreateWithSecret(req protocol.NewCapture, secret string) (protocol.CaptureCreated, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadCapture, fmt.Sprintf(format, args...))
	}
	if !catalog.ValidName(req.Name) || len(req.Name) > 100 {
		return protocol.CaptureCreated{}, bad("name %q: an image name of letters, digits, '.', '_' and '-' (at most 100, not starting with '.')", protocol.Clip(req.Name, 60))
	}
	if req.MAC != "" {
		mac, err := protocol.ParseMAC(req.MAC)
		if err != nil {
			return protocol.CaptureCreated{}, bad("%v", err)
		}
		req.MAC = mac
	}
	if len(req.Disk) > 200 || strings.ContainsFunc(req.Disk, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return protocol.CaptureCreated{}, bad("disk %q: at most 200 printable characters", protocol.Clip(req.Disk, 60))
	}
	cs.expire()
	if secret == "" {
		var err error
		if secret, err = protocol.NewCaptureSecret(); err != nil {
			return protocol.CaptureCreated{}, err
		}
	} else if !protocol.IsHex(secret, 32, 128) {
		return protocol.CaptureCreated{}, bad("upload secret: want 32-128 lower-case hex digits")
	}
	raw := make([]byte, 8)
	if _, err := rand.Read(raw); err != nil {
		return protocol.CaptureCreated{}, err
	}
	sum := sha256.Sum256([]byte(secret))
	now := time.Now().UTC()
	c := &capture{rec: captureRecord{
		CaptureState: protocol.CaptureState{ID: "c-" + hex.EncodeToString(raw), Name: req.Name, MAC: req.MAC, Disk: req.Disk, State: protocol.CaptureOpen},
		SecretSum:    hex.EncodeToString(sum[:]), Created: now, Touched: now,
	}}
	c.dir = filepath.Join(cs.cfg.Dir, "staging", c.rec.ID)
	// Never hold cs.mu while taking a capture's lock: Manifest holds a
	// capture's lock and then takes cs.mu (pending).
	cs.mu.Lock()
	all := make([]*capture, 0, len(cs.caps))
	for _, o := range cs.caps {
		all = append(all, o)
	}
	cs.mu.Unlock()
	open := 0
	for _, o := range all {
		if s := o.state().State; s.Open() || s == protocol.CaptureHashing {
			open++
		}
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if open >= cs.cfg.MaxOpen {
		return protocol.CaptureCreated{}, fmt.Errorf("%w: %d captures are open already: finish or cancel one (DELETE /api/captures/{id})", ErrCaptureState, open)
	}
	if err := os.Mkdir(c.dir, 0o700); err != nil {
		return protocol.CaptureCreated{}, fmt.Errorf("captures: %w", err)
	}
	if err := c.save(); err != nil {
		os.RemoveAll(c.dir)
		return protocol.CaptureCreated{}, fmt.Errorf("captures: %w", err)
	}
	cs.caps[c.rec.ID] = c
	cs.log.Info("captures: created", "capture", c.rec.ID, "name", req.Name, "mac", req.MAC, "disk", req.Disk)
	return protocol.CaptureCreated{CaptureState: c.rec.CaptureState, Secret: secret}, nil
}

// get returns the capture called id.
func (cs *Captures) get(id string) (*capture, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.caps[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q: see GET /api/captures", ErrNoCapture, protocol.Clip(id, 40))
	}
	return c, nil
}

// State returns a capture's state.
func (cs *Captures) State(id string) (protocol.CaptureState, error) {
	c, err := cs.get(id)
	if err != nil {
		return protocol.CaptureState{}, err
	}
	return c.state(), nil
}

// List returns every capture's state, newest first.
func (cs *Captures) List() []protocol.CaptureState {
	cs.expire()
	cs.mu.Lock()
	all := make([]*capture, 0, len(cs.caps))
	for _, c := range cs.caps {
		all = append(all, c)
	}
	cs.mu.Unlock()
	type entry struct {
		st      protocol.CaptureState
		created time.Time
	}
	var es []entry
	for _, c := range all {
		c.mu.Lock()
		es = append(es, entry{c.rec.CaptureState, c.rec.Created})
		c.mu.Unlock()
	}
	sort.Slice(es, func(i, j int) bool { return es[i].created.After(es[j].created) })
	out := make([]protocol.CaptureState, len(es))
	for i, e := range es {
		out[i] = e.st
	}
	return out
}

// authorize checks that the capture is open and secret is its upload
// secret. The capture's state is public (GET), so telling "not open"
// apart from "wrong secret" leaks nothing.
func (c *capture) authorize(secret string) error {
	if !c.rec.State.Open() || c.rec.SecretSum == "" {
		return fmt.Errorf("%w: capture %s is %s: its upload secret is spent; start a new capture", ErrCaptureState, c.rec.ID, c.rec.State)
	}
	want, err := hex.DecodeString(c.rec.SecretSum)
	got := sha256.Sum256([]byte(secret))
	if err != nil || secret == "" || subtle.ConstantTimeCompare(got[:], want) != 1 {
		return fmt.Errorf("%w: send Authorization: Bearer <the secret POST /api/captures answered>", ErrCaptureSecret)
	}
	return nil
}

// Manifest takes the uploader's manifest: it checks that the capture dir
// has room for the stream (ErrNoSpace otherwise: the capture fails, and
// nothing was sent), then makes the sparse staging files. Sending the
// same manifest again is answered with the state (a retry after a lost
// answer); another one is refused.
func (cs *Captures) Manifest(id, secret string, m *protocol.Manifest) (protocol.CaptureState, error) {
	c, err := cs.get(id)
	if err != nil {
		return protocol.CaptureState{}, err
	}
	// What the others still send, before taking c's lock: pending takes
	// theirs (two manifests at once must not wait for each other).
	others := cs.pending(c)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.authorize(secret); err != nil {
		return c.rec.CaptureState, err
	}
	if c.rec.State == protocol.CaptureReceiving {
		a, _ := json.Marshal(c.rec.Manifest)
		b, _ := json.Marshal(m)
		if string(a) == string(b) {
			return c.rec.CaptureState, nil
		}
		return c.rec.CaptureState, fmt.Errorf("%w: capture %s has its manifest already: start a new capture for another disk", ErrCaptureState, id)
	}
	total := m.Total()
	free, err := freeSpace(cs.cfg.Dir)
	if err != nil {
		return c.rec.CaptureState, fmt.Errorf("captures: free space of %s: %w", cs.cfg.Dir, err)
	}
	need := total + cs.cfg.Margin + others
	if free < need {
		err := fmt.Errorf("%w: capture %s sends %s; the server's capture folder %s has %s free and needs %s (the capture, %s kept free, and what other open captures still send): free space there or move http.capture_dir, then capture again",
			ErrNoSpace, id, bytesize.Format(total), cs.cfg.Dir, bytesize.Format(free), bytesize.Format(need), bytesize.Format(cs.cfg.Margin))
		c.failLocked(cs, err.Error())
		return c.rec.CaptureState, err
	}
	mb, err := json.Marshal(m)
	if err == nil {
		err = atomicfile.Write(filepath.Join(c.dir, "manifest.json"), mb, 0o600)
	}
	if err != nil {
		return c.rec.CaptureState, fmt.Errorf("captures: keep the manifest of capture %s: %w", id, err)
	}
	c.rec.Manifest, c.rec.Total = m, total
	if err := c.openFiles(true); err != nil {
		err = fmt.Errorf("captures: staging capture %s: %w", id, err)
		c.failLocked(cs, err.Error())
		return c.rec.CaptureState, err
	}
	c.rec.State, c.rec.Touched = protocol.CaptureReceiving, time.Now().UTC()
	if err := c.save(); err != nil {
		return c.rec.CaptureState, fmt.Errorf("captures: %w", err)
	}
	cs.log.Info("captures: manifest accepted", "capture", id, "name", c.rec.Name, "table", m.Table, "parts", len(m.Parts),
		"stream", bytesize.Format(total), "disk", bytesize.Format(m.DiskSize), "free", bytesize.Format(free))
	return c.rec.CaptureState, nil
}

// pending is what open captures other than self still send (the caller
// holds no capture's lock).
func (cs *Captures) pending(self *capture) int64 {
	cs.mu.Lock()
	others := make([]*capture, 0, len(cs.caps))
	for _, o := range cs.caps {
		if o != self {
			others = append(others, o)
		}
	}
	cs.mu.Unlock()
	var n int64
	for _, o := range others {
		st := o.state()
		if st.State == protocol.CaptureReceiving {
			n += st.Total - st.Received
		}
	}
	return n
}

// failLocked marks the capture failed and removes its staging (the
// caller holds c.mu).
func (c *capture) failLocked(cs *Captures, why string) {
	c.rec.State, c.rec.Error, c.rec.SecretSum = protocol.CaptureFailed, why, ""
	c.rec.Touched = time.Now().UTC()
	c.closeFiles()
	if !c.removed {
		os.RemoveAll(c.dir)
		c.removed = true
	}
	cs.log.Warn("captures: failed; staging removed", "capture", c.rec.ID, "name", c.rec.Name, "err", why)
}

// Cancel stops a capture that is not published: it fails with why and
// its staging is removed.
func (cs *Captures) Cancel(id, why string) (protocol.CaptureState, error) {
	c, err := cs.get(id)
	if err != nil {
		return protocol.CaptureState{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.rec.State.Open() {
		return c.rec.CaptureState, fmt.Errorf("%w: capture %s is %s: only an open capture can be canceled (remove a published image with DELETE /api/images/%s)",
			ErrCaptureState, id, c.rec.State, c.rec.Image)
	}
	c.failLocked(cs, why)
	return c.rec.CaptureState, nil
}

// expire fails open captures idle for longer than Expire, and forgets
// captures that failed longer ago than that (their staging is gone
// already), so the list stays short.
func (cs *Captures) expire() {
	cs.mu.Lock()
	all := make(map[string]*capture, len(cs.caps))
	for id, c := range cs.caps {
		all[id] = c
	}
	cs.mu.Unlock()
	for id, c := range all {
		c.mu.Lock()
		idle := time.Since(c.rec.Touched) > cs.cfg.Expire
		if c.rec.State.Open() && idle {
			c.failLocked(cs, fmt.Sprintf("expired: nothing received for %s", cs.cfg.Expire))
			idle = false
		}
		forget := c.rec.State == protocol.CaptureFailed && idle
		c.mu.Unlock()
		if forget {
			cs.mu.Lock()
			delete(cs.caps, id)
			cs.mu.Unlock()
		}
	}
}

// Authorize checks that capture id is open and secret is its upload
// secret.
func (cs *Captures) Authorize(id, secret string) error {
	c, err := cs.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authorize(secret)
}

// Begin starts a data upload at offset off: it checks the secret, the
// state and the offset, and holds the capture's one upload slot until
// the returned Upload is closed.
func (cs *Captures) Begin(id, secret string, off int64) (*Upload, error) {
	c, err := cs.get(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if err := c.authorize(secret); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	if c.rec.State != protocol.CaptureReceiving {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: capture %s has no manifest yet: send it first (PUT /api/captures/%s/manifest)", ErrCaptureState, id, id)
	}
	c.mu.Unlock()
	if !c.busy.TryLock() {
		return nil, fmt.Errorf("%w on capture %s: wait for it to end (a dropped connection ends within a minute) and ask for the offset again", ErrCaptureBusy, id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec.State != protocol.CaptureReceiving || off != c.rec.Received {
		c.busy.Unlock()
		return nil, fmt.Errorf("%w: the server holds capture %s up to byte %d; send from there (%s: %d)", ErrCaptureOffset, id, c.rec.Received, protocol.UploadOffsetHeader, c.rec.Received)
	}
	return &Upload{cs: cs, c: c}, nil
}

// Upload is one data request's writer; Write takes the stream's next
// bytes, at most Left of them.
type Upload struct {
	cs     *Captures
	c      *capture
	closed bool
}

// Left is how many bytes of the stream are still to come.
func (u *Upload) Left() int64 {
	u.c.mu.Lock()
	defer u.c.mu.Unlock()
	return u.c.rec.Total - u.c.rec.Received
}

// Offset is the server's offset now.
func (u *Upload) Offset() int64 {
	u.c.mu.Lock()
	defer u.c.mu.Unlock()
	return u.c.rec.Received
}

// Write puts b at the current offset, mapped onto the parts' extents,
// and moves the offset past it; every SyncEvery bytes the staged files
// are synced and the offset recorded.
func (u *Upload) Write(b []byte) (int, error) {
	c := u.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec.State != protocol.CaptureReceiving {
		return 0, fmt.Errorf("%w: capture %s is %s", ErrCaptureState, c.rec.ID, c.rec.State)
	}
	if int64(len(b)) > c.rec.Total-c.rec.Received {
		return 0, fmt.Errorf("%w: %d bytes past the stream's end (%d)", ErrBadCapture, int64(len(b))-(c.rec.Total-c.rec.Received), c.rec.Total)
	}
	done := 0
	for done < len(b) {
		at := c.rec.Received
		i := sort.Search(len(c.starts), func(i int) bool { return c.starts[i] > at }) - 1
		partLen := c.rec.Manifest.Parts[i].Length()
		n := int(min(int64(len(b)-done), c.starts[i]+partLen-at))
		if _, err := c.parts[i].WriteAt(b[done:done+n], at-c.starts[i]); err != nil {
			return done, fmt.Errorf("captures: write capture %s: %w", c.rec.ID, err)
		}
		done += n
		c.rec.Received += int64(n)
		c.rec.BytesIn += int64(n)
	}
	c.rec.Touched = time.Now().UTC()
	if c.rec.Received-c.synced >= u.cs.cfg.SyncEvery {
		if err := c.sync(); err != nil {
			return done, fmt.Errorf("captures: sync capture %s: %w", c.rec.ID, err)
		}
	}
	return done, nil
}

// Close syncs what was written and frees the upload slot. Closing again
// does nothing.
func (u *Upload) Close() error {
	if u.closed {
		return nil
	}
	u.closed = true
	c := u.c
	defer c.busy.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec.State != protocol.CaptureReceiving || c.synced == c.rec.Received {
		return nil
	}
	return c.sync()
}

// Finish starts making the image once every byte is in: the capture
// moves to hashing and the server re-hashes, checks and publishes it in
// the background (see finish). Its secret is spent.
func (cs *Captures) Finish(id, secret string) (protocol.CaptureState, error) {
	c, err := cs.get(id)
	if err != nil {
		return protocol.CaptureState{}, err
	}
	if !c.busy.TryLock() {
		return c.state(), fmt.Errorf("%w on capture %s: finish after the last data request ended", ErrCaptureBusy, id)
	}
	defer c.busy.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.authorize(secret); err != nil {
		return c.rec.CaptureState, err
	}
	if c.rec.State != protocol.CaptureReceiving || c.rec.Received != c.rec.Total {
		return c.rec.CaptureState, fmt.Errorf("%w: capture %s holds %d of %d bytes: send the rest first", ErrCaptureState, id, c.rec.Received, c.rec.Total)
	}
	if err := c.sync(); err != nil {
		return c.rec.CaptureState, fmt.Errorf("captures: sync capture %s: %w", id, err)
	}
	c.closeFiles()
	c.rec.State, c.rec.SecretSum = protocol.CaptureHashing, ""
	if err := c.save(); err != nil {
		c.failLocked(cs, err.Error())
		return c.rec.CaptureState, fmt.Errorf("captures: %w", err)
	}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		cs.finish(c)
	}()
	return c.rec.CaptureState, nil
}

// finish checks the received partitions against their used maps, moves
// them to images/<name>, makes the torrent from them and publishes it.
// Any error fails the capture and removes its files: nothing half-made
// is ever published.
func (cs *Captures) finish(c *capture) {
	c.mu.Lock()
	rec := c.rec
	c.mu.Unlock()
	log := cs.log.With("capture", rec.ID, "name", rec.Name)
	start := time.Now()
	fail := func(err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.failLocked(cs, err.Error())
	}
	if err := checkReceived(c.dir, rec.Manifest); err != nil {
		fail(err)
		return
	}
	name, release := cs.versionName(rec.Name)
	defer release()
	final := filepath.Join(cs.cfg.Dir, "images", name)
	if err := os.Rename(c.dir, final); err != nil {
		fail(fmt.Errorf("captures: move the staged image to %s: %w", final, err))
		return
	}
	c.mu.Lock()
	c.dir = final
	c.mu.Unlock()
	m := rec.Manifest
	parts := make([]imager.PartInfo, len(m.Parts))
	for i, p := range m.Parts {
		parts[i] = imager.PartInfo{Number: p.Number, Start: p.Start, Size: p.Size, Type: p.Type, Label: p.Label, GUID: p.GUID}
	}
	sources := partPaths(final, m)
	im, err := imager.Create(cs.cfg.Ctx, log, imager.CreateConfig{Name: name, Sources: sources, Parts: parts, Table: m.Table,
		Trackers: cs.cfg.Trackers, Raw: m.Raw})
	if err != nil {
		fail(fmt.Errorf("captures: make the image torrent: %w", err))
		return
	}
	torrent := filepath.Join(final, "image.torrent")
	if err := im.WriteFile(torrent); err != nil {
		fail(err)
		return
	}
	if _, err := cs.cfg.Catalog.Add(cs.cfg.Ctx, catalog.Spec{Name: name, Torrent: torrent, Source: sources}); err != nil {
		fail(fmt.Errorf("captures: publish %s: %w", name, err))
		return
	}
	c.mu.Lock()
	c.rec.State, c.rec.Image, c.rec.InfoHash = protocol.CapturePublished, name, im.InfoHash.HexString()
	if err := c.save(); err != nil {
		log.Error("captures: published, but its record was not saved: it will not be published again after a restart", "err", err)
	}
	c.mu.Unlock()
	log.Info("captures: published", "image", name, "info_hash", im.InfoHash.HexString(), "size", bytesize.Format(im.Length),
		"took", time.Since(start).Round(time.Millisecond))
}

// checkReceived reads each used-block part's used map from the received
// bytes, as the server's torrent will: whatever it calls used must have
// been sent, or the image would carry holes where the filesystem has
// data (an uploader that lies, or a disk that changed while it was read).
func checkReceived(dir string, m *protocol.Manifest) error {
	for i, path := range partPaths(dir, m) {
		p := m.Parts[i]
		if len(p.Extents) == 0 {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("captures: %w", err)
		}
		um, err := usedmap.Detect(f, p.Size)
		f.Close()
		if err != nil {
			return fmt.Errorf("inconsistent upload: partition %d as received: %w", p.Number, err)
		}
		sent := usedmap.Map{Size: p.Size}
		for _, e := range p.Extents {
			sent.Extents = append(sent.Extents, usedmap.Extent{Off: e[0], Len: e[1]})
		}
		if um.Kind == usedmap.Unknown {
			return fmt.Errorf("inconsistent upload: partition %d was sent as %s, but what arrived holds no filesystem pxeswarm reads", p.Number, p.Filesystem)
		}
		for _, e := range um.Extents {
			if !sent.Contains(e.Off, e.Len) {
				return fmt.Errorf("inconsistent upload: the %s filesystem of partition %d uses bytes %d-%d that were not sent: was the disk in use while it was read? capture it again, unmounted",
					um.Kind, p.Number, e.Off, e.End())
			}
		}
	}
	return nil
}

// versionName picks the name a finished capture of name publishes as:
// name itself while no image, capture or folder has it, else name-v2,
// name-v3, … It is reserved until release is called.
func (cs *Captures) versionName(name string) (string, func()) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	taken := func(n string) bool {
		if _, ok := cs.cfg.Catalog.Get(n); ok || cs.finishing[n] {
			return true
		}
		_, err := os.Lstat(filepath.Join(cs.cfg.Dir, "images", n))
		return err == nil || !errors.Is(err, os.ErrNotExist)
	}
	got := name
	for v := 2; taken(got) && v < 1_000_000; v++ {
		got = fmt.Sprintf("%s-v%d", name, v)
	}
	cs.finishing[got] = true
	return got, func() {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		delete(cs.finishing, got)
	}
}

// Names returns the names of the published captures (for tests and logs).
func (cs *Captures) Names() []string {
	var out []string
	for _, st := range cs.List() {
		if st.State == protocol.CapturePublished {
			out = append(out, st.Image)
		}
	}
	slices.Sort(out)
	return out
}
