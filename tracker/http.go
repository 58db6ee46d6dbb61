package tracker

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/anacrolix/generics"
	"github.com/anacrolix/torrent/bencode"
	httpTrackerServer "github.com/anacrolix/torrent/tracker/http/server"
	trackerServer "github.com/anacrolix/torrent/tracker/server"
	"github.com/anacrolix/torrent/tracker/shared"
	"github.com/anacrolix/torrent/tracker/udp"
)

// The announce path is anacrolix's httpTrackerServer.Handler in front of
// our announceTracker. That handler (tracker/http/server/server.go in
// anacrolix/torrent v1.61.0) has quirks we work around here:
//
//   - it ignores uploaded, downloaded, numwant and compact;
//   - it parses port and left with strconv base 0 ("010" is 8) and drops
//     bad values silently;
//   - it answers errors from TrackAnnounce with HTTP 500 plain text, where
//     BEP 3 clients expect HTTP 200 and a bencoded "failure reason";
//   - it has no scrape.
//
// So serveAnnounce parses the whole query with ParseAnnounce first and
// answers bad input with a failure reason. It then hands anacrolix a
// normalised query (plain decimal, only the keys it reads) and puts the
// parsed Announce in the request context, where TrackAnnounce and GetPeers
// read the fields anacrolix dropped. anacrolix's reply is buffered so that
// a TrackAnnounce error still becomes a failure reason.

type ctxKey struct{}

// announceCall travels in the request context from serveAnnounce through
// anacrolix's handler to announceTracker.
type announceCall struct {
	ann Announce
	err error // set by TrackAnnounce
}

func callFrom(ctx context.Context) *announceCall {
	c, _ := ctx.Value(ctxKey{}).(*announceCall)
	return c
}

// announceTracker is our trackerServer.AnnounceTracker. It also works
// without an announceCall in the context (anacrolix's UDP server, or its
// upstream augmentation), using the request's own fields then.
type announceTracker struct{ t *Tracker }

var _ trackerServer.AnnounceTracker = announceTracker{}

func (at announceTracker) TrackAnnounce(ctx context.Context, req udp.AnnounceRequest, addr trackerServer.AnnounceAddr) error {
	call := callFrom(ctx)
	var a Announce
	if call != nil {
		a = call.ann
	} else {
		a = Announce{
			InfoHash: req.InfoHash, PeerID: req.PeerId, Port: req.Port,
			Uploaded: max(req.Uploaded, 0), Downloaded: max(req.Downloaded, 0),
			Left: max(req.Left, -1), NumWant: int(max(req.NumWant, -1)),
		}
		if req.Left == math.MaxInt64 {
			a.Left = -1
		}
		switch req.Event {
		case shared.Started:
			a.Event = EventStarted
		case shared.Completed:
			a.Event = EventCompleted
		case shared.Stopped:
			a.Event = EventStopped
		}
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	err := at.t.track(a, addr)
	if call != nil {
		call.err = err
	}
	if err == nil {
		at.t.log.Debug("tracker: announce", "info_hash", hex.EncodeToString(a.InfoHash[:]), "peer", addr,
			"event", a.Event, "left", a.Left, "uploaded", a.Uploaded, "downloaded", a.Downloaded, "numwant", a.NumWant)
	}
	return err
}

func (at announceTracker) Scrape(ctx context.Context, ihs []trackerServer.InfoHash) ([]udp.ScrapeInfohashResult, error) {
	hs := make([][20]byte, len(ihs))
	for i, ih := range ihs {
		hs[i] = ih
	}
	counts := at.t.scrape(hs)
	ret := make([]udp.ScrapeInfohashResult, len(ihs))
	for i, ih := range ihs {
		c := counts[ih] // zero for unknown: UDP scrape replies are positional
		ret[i] = udp.ScrapeInfohashResult{Seeders: int32(c.seeders), Completed: int32(c.downloaded), Leechers: int32(c.leechers)}
	}
	return ret, nil
}

func (at announceTracker) GetPeers(ctx context.Context, ih trackerServer.InfoHash, opts trackerServer.GetPeersOpts, remote trackerServer.AnnounceAddr) (ret trackerServer.ServerAnnounceResult) {
	t := at.t
	peers, seeders, leechers, err := t.peersFor(ih)
	if err != nil {
		ret.Err = err
		return ret
	}
	ret.Interval = generics.Some(t.interval)
	ret.Seeders = generics.Some(int32(min(seeders, math.MaxInt32)))
	ret.Leechers = generics.Some(int32(min(leechers, math.MaxInt32)))

	want := t.cfg.MaxPeers
	if call := callFrom(ctx); call != nil {
		// anacrolix passes a fixed MaxCount of 200 and drops numwant; use ours.
		if call.ann.NumWant >= 0 {
			want = min(want, call.ann.NumWant)
		}
		if call.ann.Event == EventStopped {
			want = 0 // a leaving peer needs no peers
		}
	} else if opts.MaxCount.Ok {
		want = min(want, int(min(opts.MaxCount.Value, uint(t.cfg.MaxPeers))))
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	for _, p := range t.choose(remote, peers, want) {
		ret.Peers = append(ret.Peers, trackerServer.PeerInfo{AnnounceAddr: p.Addr})
	}
	return ret
}

func (t *Tracker) newHandler() http.Handler {
	ah := httpTrackerServer.Handler{
		Announce: &trackerServer.AnnounceHandler{AnnounceTracker: announceTracker{t}},
		// Unmap so a dual-stack listener reports IPv4 peers as IPv4 (in
		// "peers", not BEP 7 "peers6").
		RequestHost: func(r *http.Request) (netip.Addr, error) {
			ap, err := netip.ParseAddrPort(r.RemoteAddr)
			return ap.Addr().Unmap(), err
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /announce", func(w http.ResponseWriter, r *http.Request) { t.serveAnnounce(w, r, ah) })
	mux.HandleFunc("GET /scrape", t.serveScrape)
	mux.HandleFunc("GET /stats", t.serveStats)
	return mux
}

// writeFailure answers with a bencoded failure reason. BEP 3: the reply is
// still HTTP 200; clients read the dict, not the status.
func (t *Tracker) writeFailure(w http.ResponseWriter, r *http.Request, err error) {
	level := slog.LevelWarn
	if !errors.Is(err, ErrNotPublished) && !errors.Is(err, ErrBadAnnounce) && !errors.Is(err, ErrSwarmFull) && !errors.Is(err, ErrHostFull) {
		level = slog.LevelError
	}
	t.log.Log(r.Context(), level, "tracker: refused request", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
	writeBencode(w, map[string]string{"failure reason": err.Error()})
}

func writeBencode(w http.ResponseWriter, v any) {
	b, err := bencode.Marshal(v)
	if err != nil {
		http.Error(w, "tracker: encoding reply: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(b)
}

func (t *Tracker) serveAnnounce(w http.ResponseWriter, r *http.Request, ah httpTrackerServer.Handler) {
	// r.URL.Query drops malformed pairs silently; parse strictly instead.
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		t.writeFailure(w, r, fmt.Errorf("%w: query is malformed (%v): URL-escape every value", ErrBadAnnounce, err))
		return
	}
	ann, err := ParseAnnounce(q)
	if err != nil {
		t.writeFailure(w, r, err)
		return
	}
	// Refuse what TrackAnnounce would refuse before anacrolix sees it (it
	// logs such errors itself); TrackAnnounce checks again under its lock.
	if host, err := ah.RequestHost(r); err == nil {
		if err := t.admit(ann, netip.AddrPortFrom(host, ann.Port)); err != nil {
			t.writeFailure(w, r, err)
			return
		}
	}
	call := &announceCall{ann: ann}
	r2 := r.Clone(context.WithValue(r.Context(), ctxKey{}, call))
	r2.URL.RawQuery = ann.query().Encode()
	var buf bufferedResponse
	ah.ServeHTTP(&buf, r2)
	switch {
	case call.err != nil:
		t.writeFailure(w, r, call.err)
	case buf.code != http.StatusOK:
		t.writeFailure(w, r, fmt.Errorf("tracker: announce handler answered %d %q: report this as a bug", buf.code, bytes.TrimSpace(buf.body.Bytes())))
	default:
		body, err := dropEmptyKeys(buf.body.Bytes())
		if err != nil {
			t.writeFailure(w, r, fmt.Errorf("tracker: announce handler answered %q: %w: report this as a bug", buf.body.Bytes(), err))
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	}
}

// dropEmptyKeys removes the empty "failure reason", "warning message",
// "tracker id" and "peers6" that anacrolix's reply always carries. BEP 3
// clients treat the mere presence of "failure reason" as a failed announce:
// Transmission 3.00 reports `Tracker error: ""` and never gets peers.
func dropEmptyKeys(reply []byte) ([]byte, error) {
	var m map[string]bencode.Bytes
	if err := bencode.Unmarshal(reply, &m); err != nil {
		return nil, err
	}
	for _, k := range []string{"failure reason", "warning message", "tracker id", "peers6"} {
		if v, ok := m[k]; ok && string(v) == "0:" {
			delete(m, k)
		}
	}
	return bencode.Marshal(m)
}

// bufferedResponse holds anacrolix's reply until we know whether it is a
// success or an error to turn into a failure reason.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header {
	if b.header == nil {
		b.header = http.Header{}
	}
	return b.header
}

func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// scrapeFile is one entry of a BEP 48 scrape reply.
type scrapeFile struct {
	Complete   int    `bencode:"complete"`
	Downloaded int    `bencode:"downloaded"`
	Incomplete int    `bencode:"incomplete"`
	Name       string `bencode:"name,omitempty"` // BEP 48: optional
}

type scrapeReply struct {
	Files map[string]scrapeFile `bencode:"files"`
}

// serveScrape implements BEP 48: GET /scrape?info_hash=…(repeatable).
// Unknown hashes are omitted; no info_hash means every published swarm.
func (t *Tracker) serveScrape(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		t.writeFailure(w, r, fmt.Errorf("%w: scrape query is malformed (%v): URL-escape every value", ErrBadAnnounce, err))
		return
	}
	var ihs [][20]byte
	for _, s := range q["info_hash"] {
		if len(s) != 20 {
			t.writeFailure(w, r, fmt.Errorf("%w: scrape info_hash is %d bytes, want 20: send the raw 20 bytes, URL-escaped (not hex)", ErrBadAnnounce, len(s)))
			return
		}
		ihs = append(ihs, [20]byte([]byte(s)))
	}
	reply := scrapeReply{Files: map[string]scrapeFile{}}
	for ih, c := range t.scrape(ihs) {
		reply.Files[string(ih[:])] = scrapeFile{Complete: c.seeders, Downloaded: c.downloaded, Incomplete: c.leechers, Name: c.name}
	}
	writeBencode(w, reply)
}

// serveStats answers a JSON list of SwarmStats.
func (t *Tracker) serveStats(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(t.Stats()); err != nil {
		t.log.Warn("tracker: writing stats", "err", err)
	}
}

func listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

// shutdownTimeout bounds the graceful shutdown in Serve.
const shutdownTimeout = 5 * time.Second

// Serve serves Handler on ln until ctx is done, then shuts down gracefully:
// in-flight requests get shutdownTimeout, then their connections are
// closed. It returns nil when ctx ends the serving; ln is closed either way.
func (t *Tracker) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           t.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(t.log.Handler(), slog.LevelWarn),
	}
	t.log.Info("tracker: serving", "addr", ln.Addr().String(), "interval", t.cfg.Interval, "peer_ttl", t.cfg.PeerTTL)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("tracker: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.log.Warn("tracker: graceful shutdown timed out; closing connections", "addr", ln.Addr().String(), "err", err)
		srv.Close()
	}
	<-errc // http.ErrServerClosed
	t.log.Info("tracker: stopped", "addr", ln.Addr().String())
	return nil
}
