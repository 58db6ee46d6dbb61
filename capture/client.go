package capture

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// ErrServer: the server refused a call for good (a wrong token or
// secret, no space, a capture that failed). Retrying does not help.
var ErrServer = errors.New("the server refused the capture")

// Progress is the uploader's progress, for the CLI and the agent's
// console.
type Progress struct {
	State protocol.CaptureStatus // receiving while sending, then hashing, published
	Sent  int64                  // stream offset the server holds
	Total int64                  // stream length
	Rate  float64                // bytes/s, since the start of this run
	// Resumes counts the data requests that started again after a
	// dropped connection.
	Resumes int
	Elapsed time.Duration
}

// Line is a one-line summary, like imager.Progress.Line.
func (p Progress) Line() string {
	if p.State == protocol.CaptureOpen && p.Total == 0 {
		return fmt.Sprintf("open: waiting for the machine to send its disk's manifest (%s)", p.Elapsed.Round(time.Second))
	}
	pct := 0.0
	if p.Total > 0 {
		pct = 100 * float64(p.Sent) / float64(p.Total)
	}
	s := fmt.Sprintf("%s %5.1f%% %s of %s, %s/s", p.State, pct, bytesize.Format(p.Sent), bytesize.Format(p.Total), bytesize.Format(int64(p.Rate)))
	if p.Resumes > 0 {
		s += fmt.Sprintf(", resumed %d×", p.Resumes)
	}
	return s
}

// Client makes a capture's HTTP calls to one server.
type Client struct {
	// Server is the server's base URL, e.g. https://198.18.0.1:8443.
	Server string
	// HTTP is the client; nil: one without an overall timeout (uploads
	// are long) whose dials and answers are bounded.
	HTTP *http.Client
	// ID and Secret name the capture once it exists (Create fills them in;
	// the agent gets them from its plan).
	ID, Secret string
	// Retries bounds the data requests in a row that make no progress
	// before Upload gives up; 0 means 8. Back-off starts at Backoff (0:
	// 1s) and doubles up to 30s.
	Retries int
	Backoff time.Duration
	// Stall cuts a data request that sent nothing for this long, so a
	// silently dead connection is resumed; 0 means 60s.
	Stall time.Duration
	// Progress, if set, is called about every ProgressEvery (0: 500ms).
	Progress      func(Progress)
	ProgressEvery time.Duration
	Log           *slog.Logger
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Every answer comes soon after its request is sent (finish answers
	// 202 before hashing): this bounds a stuck server, not an upload.
	tr.ResponseHeaderTimeout = 2 * time.Minute
	c.HTTP = &http.Client{Transport: tr}
	return c.HTTP
}

func (c *Client) log() *slog.Logger {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Client) url(path string) string {
	return strings.TrimRight(c.Server, "/") + path
}

// call sends one request and decodes a JSON answer into out (if not nil).
// A non-2xx answer is an error carrying the server's message; those that
// retrying cannot fix wrap ErrServer.
func (c *Client) call(ctx context.Context, method, path, bearer string, body io.Reader, size int64, hdr map[string]string, out any) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return nil, fmt.Errorf("capture: server URL %q: %w", c.Server, err)
	}
	if body != nil {
		req.ContentLength = size
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("capture: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		err := fmt.Errorf("capture: %s %s: server answered %s: %s", method, path, resp.Status, protocol.Clip(msg, 2000))
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusBadRequest,
			http.StatusInsufficientStorage, http.StatusRequestEntityTooLarge, http.StatusMethodNotAllowed:
			err = fmt.Errorf("%w: %w", ErrServer, err)
		}
		return resp, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp, fmt.Errorf("capture: %s %s: the answer is not what pxeswarm serve sends (%v): is the URL right?", method, path, err)
		}
	}
	return resp, nil
}

// Create starts a capture with the admin token and keeps its ID and
// secret.
func (c *Client) Create(ctx context.Context, token string, req protocol.NewCapture) (protocol.CaptureCreated, error) {
	var created protocol.CaptureCreated
	body, _ := json.Marshal(req)
	if _, err := c.call(ctx, "POST", "/api/captures", token, bytes.NewReader(body), int64(len(body)),
		map[string]string{"Content-Type": "application/json"}, &created); err != nil {
		return created, err
	}
	if created.ID == "" || created.Secret == "" {
		return created, fmt.Errorf("capture: the server answered no capture ID or secret: is %s a pxeswarm server of this version?", c.Server)
	}
	c.ID, c.Secret = created.ID, created.Secret
	return created, nil
}

// State asks for the capture's state (the read API: no secret).
func (c *Client) State(ctx context.Context) (protocol.CaptureState, error) {
	var st protocol.CaptureState
	_, err := c.call(ctx, "GET", "/api/captures/"+c.ID, "", nil, 0, nil, &st)
	return st, err
}

// SendManifest sends the manifest; the server checks its free space
// first (no space: an ErrServer saying how much is needed and free).
func (c *Client) SendManifest(ctx context.Context, m *protocol.Manifest) (protocol.CaptureState, error) {
	var st protocol.CaptureState
	body, err := json.Marshal(m)
	if err != nil {
		return st, err
	}
	_, err = c.call(ctx, "PUT", "/api/captures/"+c.ID+"/manifest", c.Secret, bytes.NewReader(body), int64(len(body)),
		map[string]string{"Content-Type": "application/json"}, &st)
	return st, err
}

// Upload sends the stream src of total bytes from wherever the server
// is. After a dropped or stalled connection it asks for the server's
// offset and goes on from there, after a back-off; it gives up after
// Retries attempts in a row without progress, or at once on an ErrServer.
func (c *Client) Upload(ctx context.Context, src io.ReaderAt, total int64) error {
	retries, backoff, stall := c.Retries, c.Backoff, c.Stall
	if retries <= 0 {
		retries = 8
	}
	if backoff <= 0 {
		backoff = time.Second
	}
	if stall <= 0 {
		stall = time.Minute
	}
	every := c.ProgressEvery
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	start := time.Now()
	var sent atomic.Int64 // the stream offset reached by this process's requests
	var firstOff atomic.Int64
	firstOff.Store(-1)
	var resumes atomic.Int64
	report := func() {
		if c.Progress == nil {
			return
		}
		s := sent.Load()
		el := time.Since(start)
		rate := 0.0
		if f := firstOff.Load(); f >= 0 && el > 0 {
			rate = float64(s-f) / el.Seconds()
		}
		c.Progress(Progress{State: protocol.CaptureReceiving, Sent: s, Total: total, Rate: rate, Resumes: int(resumes.Load()), Elapsed: el})
	}
	stopReport := imager.ReportEvery(ctx, every, report)
	defer stopReport()
	failures := 0
	lastOff := int64(-1)
	for {
		st, err := c.State(ctx)
		if err == nil {
			switch {
			case st.State != protocol.CaptureReceiving:
				return fmt.Errorf("%w: capture %s is %s, not receiving: %s", ErrServer, c.ID, st.State, st.Error)
			case st.Total != total:
				return fmt.Errorf("%w: capture %s expects %d bytes, this disk %d: it belongs to another disk", ErrServer, c.ID, st.Total, total)
			}
			sent.Store(st.Received)
			firstOff.CompareAndSwap(-1, st.Received)
			if st.Received == total {
				report()
				return nil
			}
			if st.Received > lastOff {
				failures = 0
			}
			if lastOff >= 0 {
				resumes.Add(1)
				c.log().Info("capture: resuming the upload", "capture", c.ID, "offset", st.Received, "of", total)
			}
			lastOff = st.Received
			err = c.put(ctx, src, st.Received, total, stall, &sent)
			if err == nil && sent.Load() > st.Received {
				continue
			}
			if err == nil {
				err = fmt.Errorf("capture: the server took no data at offset %d", st.Received)
			}
		}
		if errors.Is(err, ErrServer) || ctx.Err() != nil {
			return err
		}
		failures++
		if failures > retries {
			return fmt.Errorf("capture: %d attempts in a row made no progress, giving up (the server keeps the capture until it expires): %w", failures, err)
		}
		wait := min(backoff<<min(failures-1, 5), 30*time.Second)
		c.log().Warn("capture: upload interrupted; retrying", "capture", c.ID, "attempt", failures, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// put sends the stream from off to its end in one request. A request
// that sends nothing for stall is cut.
func (c *Client) put(ctx context.Context, src io.ReaderAt, off, total int64, stall time.Duration, sent *atomic.Int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body := &counter{r: bufio.NewReaderSize(io.NewSectionReader(src, off, total-off), 1<<20), at: off, sent: sent}
	body.last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(min(stall/4, time.Second))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if time.Since(time.Unix(0, body.last.Load())) > stall {
					c.log().Warn("capture: the upload stalled; cutting it to resume", "capture", c.ID, "stall", stall)
					cancel()
					return
				}
			}
		}
	}()
	var st protocol.CaptureState
	_, err := c.call(ctx, "PUT", "/api/captures/"+c.ID+"/data", c.Secret, body, total-off,
		// 100-continue: a refusal (wrong offset, another upload, a spent
		// secret) comes before the body is sent.
		map[string]string{protocol.UploadOffsetHeader: strconv.FormatInt(off, 10), "Content-Type": "application/octet-stream",
			"Expect": "100-continue"}, &st)
	if err != nil {
		return err
	}
	sent.Store(st.Received)
	return nil
}

// counter counts what the HTTP client reads of the body.
type counter struct {
	r    io.Reader
	at   int64
	sent *atomic.Int64
	last atomic.Int64 // unix nanos of the last read
}

func (c *counter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.at += int64(n)
		// What the server holds is known only from its answers; this is
		// what left this process, for progress.
		c.sent.Store(c.at)
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// Finish asks the server to make the image, then waits until it is
// published (or failed), calling Progress while the server hashes.
func (c *Client) Finish(ctx context.Context) (protocol.CaptureState, error) {
	var st protocol.CaptureState
	if _, err := c.call(ctx, "POST", "/api/captures/"+c.ID+"/finish", c.Secret, nil, 0, nil, &st); err != nil {
		return st, err
	}
	return c.Wait(ctx)
}

// Wait polls the capture until it is published or failed.
func (c *Client) Wait(ctx context.Context) (protocol.CaptureState, error) {
	start := time.Now()
	failures := 0
	for {
		st, err := c.State(ctx)
		switch {
		case err != nil:
			if failures++; failures > 30 || errors.Is(err, ErrServer) {
				return st, err
			}
		case st.State == protocol.CapturePublished:
			return st, nil
		case st.State == protocol.CaptureFailed:
			return st, fmt.Errorf("%w: the server did not publish capture %s: %s", ErrServer, c.ID, st.Error)
		default:
			failures = 0
			if c.Progress != nil {
				c.Progress(Progress{State: st.State, Sent: st.Received, Total: st.Total, Elapsed: time.Since(start)})
			}
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Cancel cancels the capture with the admin token (its staging is
// removed on the server).
func (c *Client) Cancel(ctx context.Context, token string) error {
	resp, err := c.call(ctx, "DELETE", "/api/captures/"+c.ID, token, nil, 0, nil, nil)
	if resp != nil && resp.StatusCode == http.StatusConflict {
		return nil // not open any more: failed already, nothing staged
	}
	return err
}
