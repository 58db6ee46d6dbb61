package imager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
)

// Mode is how a session treats what its targets already hold.
type Mode string

const (
	// ModeSeed trusts the sources: every piece is marked complete without
	// reading the image, so seeding starts at once.
	ModeSeed Mode = "seed"
	// ModeFresh assumes the targets hold nothing and never reads them back
	// first. Every received piece is still verified.
	ModeFresh Mode = "fresh"
	// ModeVerify hashes what the targets hold first and fetches only the
	// pieces that differ: resume and incremental re-imaging.
	ModeVerify Mode = "verify"
)

// ParseMode checks a --check value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeFresh, ModeVerify, ModeSeed:
		return m, nil
	}
	return "", fmt.Errorf("check mode %q: want fresh (blank target) or verify (hash what is there, fetch the rest)", s)
}

// Config describes one seed or fetch of one image.
type Config struct {
	// Image to seed or fetch.
	Image *Image
	// Paths are the sources (ModeSeed) or targets, one per image part in
	// order. Instead of Paths, Parts may give already-open devices; their
	// owner then finishes a used-block image's gaps (FinishGaps), which
	// the session does itself for the targets it opens from Paths.
	Paths []string
	Parts []Part
	// Discard asks the session to discard the free gaps of used-block
	// parts in the targets it opens from Paths, where the device can
	// (FinishGaps). Zero gaps (GapsZero) are zeroed with or without it.
	Discard bool
	// Mode is ModeSeed, ModeFresh or ModeVerify.
	Mode Mode
	// Listen is host:port for peer connections; "" means any address and
	// a free port.
	Listen string
	// Trackers replace the torrent's announce URLs when set.
	Trackers []string
	// WebSeeds add BEP 19 HTTP sources.
	WebSeeds []string
	// Peers are host:port addresses to connect to directly, besides what
	// the trackers return (a known seeder on a network without a tracker).
	Peers []string
	// StateFile, when set, keeps the piece completion across runs. It is
	// loaded at start (pieces it lists are trusted, not re-read) and saved
	// every few seconds after the targets are synced, and at the end.
	StateFile string
	// FlushEvery is how often a fetch flushes its targets (and saves the
	// StateFile): a power cut loses at most that much of the work, since
	// a restart with ModeVerify finds the rest on the disk. Default 5 s.
	FlushEvery time.Duration
	// Tuning holds the LAN knobs; zero fields take DefaultTuning.
	Tuning Tuning
	// Progress, if set, is called every ProgressEvery (default 1 s) and
	// once at each state change.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// Session is a running seed or fetch.
type Session struct {
	cfg   Config
	log   *slog.Logger
	im    *Image
	comp  *completion
	devs  []*Device
	parts []Part // what the storage writes: flushed by sync
	cl    *torrent.Client
	t     *torrent.Torrent
	start time.Time
	took  time.Duration // until complete
	meter rateMeter
	upMtr rateMeter

	mu       sync.Mutex
	state    State
	verified atomic.Int64 // bytes hashed while verifying
	gapsDone atomic.Int64 // gap bytes zeroed or discarded (StateGaps)
	gapsAll  atomic.Int64 // of this many
	gapMtr   rateMeter
	// gapsLeft: finishGaps started and has not finished; the image is
	// not done while it is set.
	gapsLeft bool
	fromSeed atomic.Int64 // useful bytes from image hosts
	sources  sourceMeter  // useful bytes by source
	err      error

	// writeErr is the first write error; writeFailed is closed when it is
	// set.
	writeErr    error
	writeFailed chan struct{}

	sched      *schedule // the seeder's schedule; nil when fetching
	ln         net.Listener
	stopReport func()
	closeOnce  sync.Once
	closeErr   error
	final      *Progress // set by Close

	// What a torrent is added with; kept to add it again (stock.go).
	trackers []string
	webSeeds []string
	peers    []torrent.PeerInfo
	// The fall-back to StockChunkSize (stock.go); stockFound is nil when
	// it does not apply. swapped is closed once s.t was replaced, and
	// before holds the counters of the torrent it replaced.
	stockFound chan stockPeer
	swapped    chan struct{}
	before     counters
	// stop ends the background goroutines (bg) of a fetch.
	stop chan struct{}
	bg   sync.WaitGroup
}

// Join opens the sources or targets, applies the check mode and joins the
// swarm. It returns once the session is running; use Wait to block until
// the image is complete and Close to leave the swarm. Targets are checked
// (count and size) before anything is written.
func (c Config) Join(ctx context.Context, log *slog.Logger) (*Session, error) {
	if c.Image == nil {
		return nil, errors.New("no image: load a torrent first")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.Mode == "" {
		c.Mode = ModeFresh
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return nil, err
	}
	if c.FlushEvery <= 0 {
		c.FlushEvery = 5 * time.Second
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = time.Second
	}
	im := c.Image
	autoChunk := c.Tuning.ChunkSize == 0
	if autoChunk && im.Stock {
		c.Tuning.ChunkSize = StockChunkSize
	}
	tu := c.Tuning.withDefaults()
	s := &Session{cfg: c, log: log.With("image", im.Name), im: im, comp: newCompletion(im.NumPieces()), start: time.Now()}
	ok := false
	defer func() {
		if !ok {
			s.closeDevices()
		}
	}()

	parts := c.Parts
	if parts == nil {
		var err error
		if parts, err = s.open(c.Paths); err != nil {
			return nil, err
		}
	}
	s.parts = parts
	s.writeFailed = make(chan struct{})
	st, err := newStorage(im, parts, s.comp, s.writeError)
	if err != nil {
		return nil, err
	}
	if c.StateFile != "" && c.Mode != ModeSeed {
		if data, err := os.ReadFile(c.StateFile); err == nil {
			if err := s.comp.unmarshal(im.InfoHash, data); err != nil {
				return nil, fmt.Errorf("state file %s: %w", c.StateFile, err)
			}
			s.log.Info("resuming from saved state", "file", c.StateFile, "pieces_present", s.comp.complete(), "pieces", im.NumPieces())
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read state file: %w", err)
		}
	}

	if c.Progress != nil {
		s.stopReport = ReportEvery(context.Background(), c.ProgressEvery, func() { c.Progress(s.Progress()) })
	}
	switch c.Mode {
	case ModeSeed:
		s.comp.setAll(true)
	case ModeVerify:
		s.setState(StateVerifying)
		if err := s.verify(ctx, st.sp, tu.HashWorkers); err != nil {
			s.stopReporting()
			return nil, err
		}
	}

	host, port, err := splitListen(c.Listen)
	if err != nil {
		s.stopReporting()
		return nil, err
	}
	for _, p := range c.Peers {
		ap, err := netip.ParseAddrPort(p)
		if err != nil {
			s.stopReporting()
			return nil, fmt.Errorf("peer %q: want ip:port such as 198.18.0.1:6881: %w", p, err)
		}
		s.peers = append(s.peers, torrent.PeerInfo{Addr: ap, Source: torrent.PeerSourceDirect})
	}
	if c.Mode == ModeSeed {
		s.sched = newSchedule(im.NumPieces(), im.pieceSize, s.log)
	}
	ln, dialer, err := peerSockets(host, port, tu.IPv6, max(tu.MaxConnsPerHost, 0), s.log)
	if err != nil {
		s.stopReporting()
		return nil, fmt.Errorf("listen for peers on %q: is the port free? %w", c.Listen, err)
	}
	cc := tu.clientConfig(s.log, st, host, s.sched, &s.fromSeed, &s.sources)
	if c.Mode != ModeSeed && autoChunk && tu.ChunkSize > StockChunkSize {
		s.stockFound = make(chan stockPeer, 1)
		watchStockPeers(&cc.Callbacks, s.stockFound)
	}
	cl, err := torrent.NewClient(cc)
	if err != nil {
		s.stopReporting()
		if s.sched != nil {
			s.sched.close()
		}
		ln.Close()
		return nil, fmt.Errorf("start BitTorrent client: %w", err)
	}
	s.cl, s.ln = cl, ln
	cl.AddListener(ln)
	cl.AddDialer(dialer)
	s.trackers = c.Trackers
	if len(s.trackers) == 0 {
		s.trackers = im.Meta.UpvertedAnnounceList().DistinctValues()
	}
	s.webSeeds = append(append([]string(nil), im.Meta.UrlList...), c.WebSeeds...)
	downloading := c.Mode != ModeSeed && s.comp.complete() < im.NumPieces()
	if downloading {
		s.setState(StateDownloading)
	} else {
		s.setState(StateSeeding)
	}
	s.t = s.addTorrent(tu.ChunkSize, downloading)
	s.stop = make(chan struct{})
	if s.stockFound != nil && downloading {
		s.swapped = make(chan struct{})
		s.bg.Add(1)
		go s.fallBack(tu.ChunkSize)
	}
	if len(s.peers) > 0 && downloading {
		s.bg.Add(1)
		go s.redialPeers()
	}
	s.log.Info("joined swarm", "mode", c.Mode, "infohash", im.InfoHash.HexString(),
		"listen", s.ListenAddr(), "trackers", s.trackers, "web_seeds", len(s.webSeeds), "present", bytesize.Format(s.present()))
	ok = true
	return s, nil
}

// addTorrent adds the image to the client with the given chunk size, and
// the session's trackers, web seeds and peers; download starts the
// download of every piece.
func (s *Session) addTorrent(chunk int, download bool) *torrent.Torrent {
	t, _ := s.cl.AddTorrentOpt(torrent.AddTorrentOpts{
		InfoHash:  s.im.InfoHash,
		InfoBytes: s.im.Meta.InfoBytes,
		ChunkSize: pp.Integer(chunk),
	})
	if len(s.trackers) > 0 {
		t.AddTrackers([][]string{s.trackers})
	}
	if len(s.webSeeds) > 0 {
		t.AddWebSeeds(s.webSeeds)
	}
	if len(s.peers) > 0 {
		t.AddPeers(s.peers)
	}
	if download {
		t.DownloadAll()
	}
	return t
}

// redialEvery is how often a fetch offers its direct peers (Config.Peers)
// to anacrolix again while it downloads.
const redialEvery = 5 * time.Second

// redialPeers offers the direct peers again every redialEvery until the
// image is complete: anacrolix dials a peer it is given once, and forgets
// it when the dial or the handshake fails (a stock client that is still
// starting closes the connection), where a tracker would hand it out
// again at the next announce. Peers already connected are not dialled.
func (s *Session) redialPeers() {
	defer s.bg.Done()
	tick := time.NewTicker(redialEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		t, _ := s.torrent()
		if t.Complete().Bool() {
			return
		}
		t.AddPeers(s.peers)
	}
}

// torrent returns the session's torrent (it changes once when the chunk
// size falls back, stock.go) and the counters of the torrent it replaced.
func (s *Session) torrent() (*torrent.Torrent, counters) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t, s.before
}

// open opens each path as a source (seed) or target (fetch).
func (s *Session) open(paths []string) ([]Part, error) {
	if s.cfg.Mode == ModeSeed {
		devs, err := s.im.OpenSources(paths)
		if err != nil {
			return nil, err
		}
		s.devs = devs
		return s.im.SourceParts(devs), nil
	}
	if err := s.im.checkCount(len(paths)); err != nil {
		return nil, err
	}
	// Check every path before opening any for writing, so a bad second
	// target leaves the first untouched.
	for i, p := range paths {
		if err := checkTarget(p, s.im.Files[i].Span()); err != nil {
			return nil, err
		}
	}
	var parts []Part
	for i, p := range paths {
		d, err := OpenTarget(p, s.im.Files[i].Span())
		if err != nil {
			return nil, err
		}
		s.devs = append(s.devs, d)
		parts = append(parts, Part{RW: OnExtents(d, s.im.Files[i].Part.Extents), Length: s.im.Files[i].Length})
	}
	return parts, nil
}

// checkTarget reports whether OpenTarget would accept path, without
// creating or changing anything.
func checkTarget(path string, length int64) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("target %s: %w", path, err)
	}
	if st.Mode().IsRegular() && st.Size() == 0 {
		return nil // OpenTarget sizes empty files
	}
	d, err := blockdev.Open(path, false)
	if err != nil {
		return fmt.Errorf("target %s: %w", path, err)
	}
	defer d.Close()
	return fits(d, length)
}

// verify hashes the targets and marks the pieces that match.
func (s *Session) verify(ctx context.Context, sp *span, workers int) error {
	s.log.Info("verifying what the target holds", "size", bytesize.Format(s.im.Length))
	err := hashPieces(ctx, sp, s.im.Length, s.im.PieceLength, workers, &s.verified, func(i int, sum [20]byte) {
		if sum == s.im.PieceHash(i) {
			s.comp.set(i, true)
		}
	})
	if err != nil {
		return fmt.Errorf("verify targets: %w", err)
	}
	s.log.Info("verified target", "pieces_present", s.comp.complete(), "pieces", s.im.NumPieces(),
		"missing", bytesize.Format(s.im.Length-s.present()))
	return nil
}

// present is the number of bytes in verified pieces.
func (s *Session) present() int64 {
	n := int64(s.comp.complete()) * s.im.PieceLength
	last := s.im.NumPieces() - 1
	if last >= 0 && s.comp.get(last) {
		n -= s.im.PieceLength - s.im.pieceSize(last)
	}
	return n
}

func splitListen(addr string) (string, int, error) {
	if addr == "" {
		return "", 0, nil
	}
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: want host:port such as :6881 or 198.18.0.1:6881: %w", addr, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: port must be 0-65535", addr)
	}
	return host, port, nil
}

func (s *Session) setState(st State) {
	s.mu.Lock()
	changed := s.state != st
	s.state = st
	s.mu.Unlock()
	if changed && s.cfg.Progress != nil {
		s.cfg.Progress(s.Progress())
	}
}

// ListenAddr is where peers reach this session.
func (s *Session) ListenAddr() string {
	if s.cl == nil {
		return ""
	}
	for _, a := range s.cl.ListenAddrs() {
		return a.String()
	}
	return ""
}

// Image returns the image of this session.
func (s *Session) Image() *Image { return s.im }

// Progress reads the current progress.
func (s *Session) Progress() Progress {
	s.mu.Lock()
	if s.final != nil {
		defer s.mu.Unlock()
		return *s.final
	}
	p := Progress{State: s.state, Total: s.im.Length}
	if s.err != nil {
		p.Err = s.err.Error()
	}
	s.mu.Unlock()
	p.Elapsed = time.Since(s.start).Round(time.Millisecond)
	p.Took = s.took
	if p.State == StateVerifying {
		p.Done = s.verified.Load()
		p.Rate = s.meter.update(time.Now(), p.Done)
		return p
	}
	if p.State == StateGaps {
		p.Total, p.Done = s.gapsAll.Load(), s.gapsDone.Load()
		p.Rate = s.gapMtr.update(time.Now(), p.Done)
		return p
	}
	p.Done = s.present()
	p.Rate = s.meter.update(time.Now(), p.Done)
	if t, before := s.torrent(); t != nil {
		ts := t.Stats()
		c := before.plus(countersOf(ts))
		p.Peers = ts.ActivePeers
		p.Seeders = ts.ConnectedSeeders
		p.Uploaded = c.sent
		p.UpRate = s.upMtr.update(time.Now(), p.Uploaded)
		p.Downloaded = c.received
		p.FromSeeders = s.fromSeed.Load()
		p.Sources = s.sources.snapshot()
		p.Wasted = c.received - c.useful
		p.BadPieces = c.badPieces
	}
	return p
}

// counters are the byte and piece counts Progress reports.
type counters struct{ sent, received, useful, badPieces int64 }

func countersOf(ts torrent.TorrentStats) counters {
	return counters{ts.BytesWrittenData.Int64(), ts.BytesReadData.Int64(), ts.BytesReadUsefulData.Int64(), ts.PiecesDirtiedBad.Int64()}
}

func (c counters) plus(d counters) counters {
	return counters{c.sent + d.sent, c.received + d.received, c.useful + d.useful, c.badPieces + d.badPieces}
}

// Wait blocks until every piece is verified on the targets, then syncs
// them and saves the state. It returns at once for a seed.
func (s *Session) Wait(ctx context.Context) error {
	saveTick := time.NewTicker(s.cfg.FlushEvery)
	defer saveTick.Stop()
	swapped := s.swapped // nil unless the chunk size may fall back
	for {
		t, _ := s.torrent()
		select {
		case <-swapped:
			swapped = nil // wait on the new torrent
		case <-t.Complete().On():
			if err := s.sync(); err != nil {
				return s.fail(err)
			}
			if err := s.finishGaps(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return s.fail(err)
			}
			s.mu.Lock()
			s.took = time.Since(s.start).Round(time.Millisecond)
			s.mu.Unlock()
			s.setState(StateSeeding)
			s.log.Info("image complete", "took", s.took)
			return nil
		case <-s.writeFailed:
			s.mu.Lock()
			err := s.writeErr
			s.mu.Unlock()
			return s.fail(fmt.Errorf("%w: nothing more is written; the disk may be failing or full: check it (dmesg, smartctl) or pick another target, then start again", err))
		case <-ctx.Done():
			if err := s.sync(); err != nil {
				s.log.Warn("sync on cancel", "err", err)
			}
			return ctx.Err()
		case <-saveTick.C:
			if err := s.sync(); err != nil {
				return s.fail(err)
			}
		}
	}
}

// finishGaps zeroes (GapsZero) or discards (Config.Discard) the gaps of
// the used-block parts of the targets the session opened from Paths,
// then flushes them. The owner of Config.Parts does this for those.
func (s *Session) finishGaps(ctx context.Context) error {
	if s.cfg.Parts != nil || s.cfg.Mode == ModeSeed {
		return nil
	}
	needed := false
	for _, f := range s.im.Files {
		needed = needed || len(f.Part.Extents) > 0 && (f.Part.Gaps != GapsFree || s.cfg.Discard)
	}
	if !needed {
		return nil
	}
	s.mu.Lock()
	s.gapsLeft = true
	s.mu.Unlock()
	s.setState(StateGaps)
	err := FinishGaps(ctx, s.log, s.im, s.parts, s.cfg.Discard, func(done, total int64) {
		s.gapsAll.Store(total)
		s.gapsDone.Store(done)
	})
	if err != nil {
		return fmt.Errorf("%w: the targets are half-written (every piece is there, the zeros between the extents are not): check the target (dmesg), or pick another, then start again", err)
	}
	if err := s.sync(); err != nil {
		return err
	}
	s.mu.Lock()
	s.gapsLeft = false
	s.mu.Unlock()
	return nil
}

// writeError records the storage's first write error and wakes Wait.
func (s *Session) writeError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeErr == nil {
		s.writeErr = err
		s.log.Error("write to the target failed", "err", err)
		close(s.writeFailed)
	}
}

func (s *Session) fail(err error) error {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	s.setState(StateFailed)
	return err
}

// sync flushes the targets, then records the completion: a piece is in
// the saved state only once its bytes are on stable storage. Wait calls
// it every few seconds while fetching, so a power cut loses only the last
// seconds' pieces: a restart with check verify finds the rest on the disk.
func (s *Session) sync() error {
	if s.cfg.Mode == ModeSeed {
		return nil
	}
	snapshot := s.comp.marshal(s.im.InfoHash)
	for i, p := range s.parts {
		if f, ok := p.RW.(interface{ Sync() error }); ok {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("flush part %d (%s): %w", i+1, s.im.Files[i].Path, err)
			}
		}
	}
	if s.cfg.StateFile == "" {
		return nil
	}
	return writeState(s.cfg.StateFile, snapshot)
}

// Seed keeps serving peers for d (0: not at all, <0: until ctx ends).
func (s *Session) Seed(ctx context.Context, d time.Duration) error {
	if d == 0 {
		return nil
	}
	s.setState(StateSeeding)
	if d < 0 {
		<-ctx.Done()
		return nil
	}
	s.log.Info("seeding", "for", d)
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	return nil
}

// Close leaves the swarm and closes the targets. anacrolix's Client.Close
// has been seen never to return, so it gets a deadline.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			s.bg.Wait()
		}
		last := s.Progress()
		if s.cl != nil {
			done := make(chan struct{})
			go func() { s.cl.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				s.log.Warn("BitTorrent client did not close within 10s; leaving it")
			}
		}
		if s.ln != nil {
			s.ln.Close()
		}
		if s.sched != nil {
			s.sched.close()
		}
		if err := s.sync(); err != nil {
			s.closeErr = err
		}
		s.stopReporting()
		s.mu.Lock()
		switch {
		case s.state == StateFailed:
		case s.comp.complete() == s.im.NumPieces() && !s.gapsLeft:
			s.state = StateDone
		default:
			// Closed before every piece was verified (or before the gaps
			// were finished): never "done".
			s.state = StateStopped
		}
		last.State = s.state
		last.Elapsed = time.Since(s.start).Round(time.Millisecond)
		s.final = &last
		s.mu.Unlock()
		s.closeDevices()
	})
	return s.closeErr
}

func (s *Session) stopReporting() {
	if s.stopReport != nil {
		s.stopReport()
		s.stopReport = nil
	}
}

func (s *Session) closeDevices() {
	for _, d := range s.devs {
		d.Close()
	}
	s.devs = nil
}

// Run is Join, Wait, Seed(seedFor) and Close in one call: a whole fetch
// (or, for ModeSeed, a seed until ctx ends).
func (c Config) Run(ctx context.Context, log *slog.Logger, seedFor time.Duration) (Progress, error) {
	s, err := c.Join(ctx, log)
	if err != nil {
		return Progress{State: StateFailed, Err: err.Error()}, err
	}
	defer s.Close()
	if c.Mode == ModeSeed {
		seedFor = -1
	} else if err := s.Wait(ctx); err != nil {
		s.Close()
		return s.Progress(), err
	}
	s.Seed(ctx, seedFor)
	err = s.Close()
	return s.Progress(), err
}
