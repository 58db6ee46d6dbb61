package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// keepAlive is how often an unchanged stream still sends a snapshot, so
// a page sees the stream is alive (and "last seen" ages move on).
const keepAlive = 2 * time.Second

// serveEvents answers GET /api/events with Server-Sent Events: a
// "snapshot" event carrying Config.Snapshot as JSON at once, then
// whenever it changes (looked at every Interval) and at least every
// keepAlive. It needs a session, or OpenRoom; the stream ends when the
// session does, when the client goes, or when the console is closed.
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.sessions.get(r); !ok && !c.cfg.OpenRoom {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "{\"error\": %q}\n", ErrNoSession.Error())
		return
	}
	select {
	case c.streams <- struct{}{}:
		defer func() { <-c.streams }()
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "{\"error\": %q}\n", "too many open event streams: close some console tabs")
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var last []byte
	var sent time.Time
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		if _, ok := c.sessions.get(r); !ok && !c.cfg.OpenRoom {
			fmt.Fprint(w, "event: logout\ndata: {}\n\n")
			rc.Flush()
			return
		}
		v, err := c.cfg.Snapshot()
		if err != nil {
			c.log.Error("console: event snapshot", "err", err)
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			c.log.Error("console: encoding an event snapshot", "err", err)
			return
		}
		if !bytes.Equal(b, last) || time.Since(sent) >= keepAlive {
			// JSON has no raw newlines, so one data line holds it.
			fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b)
			if err := rc.Flush(); err != nil {
				return
			}
			last, sent = b, time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-c.closed:
			return
		case <-tick.C:
		}
	}
}
