package imager

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// State is a session's phase, as shown to people and reported to the server.
type State string

const (
	StateHashing     State = "hashing"     // building a torrent
	StateVerifying   State = "verifying"   // hashing what a target already holds
	StateDownloading State = "downloading" // fetching missing pieces
	StateSeeding     State = "seeding"     // complete, serving peers
	StateDone        State = "done"        // complete and closed
	StateStopped     State = "stopped"     // closed before the image was complete
	StateFailed      State = "failed"
)

// Progress is the one progress record that the CLI, the agent's console and
// the server's status API share.
type Progress struct {
	State      State   `json:"state"`
	Total      int64   `json:"total"`      // bytes in the image
	Done       int64   `json:"done"`       // bytes verified present
	Rate       float64 `json:"rate"`       // bytes/s of Done, smoothed
	UpRate     float64 `json:"up_rate"`    // bytes/s sent to peers, smoothed
	Peers      int     `json:"peers"`      // connected peers
	Seeders    int     `json:"seeders"`    // connected peers that hold everything
	Uploaded   int64   `json:"uploaded"`   // payload bytes sent to peers
	Downloaded int64   `json:"downloaded"` // payload bytes received from peers
	// FromSeeders is the useful part of Downloaded that came from image
	// hosts (pxeswarm seeders and web seeds); the rest came from other
	// machines in the swarm.
	FromSeeders int64 `json:"from_seeders"`
	// Sources splits the useful bytes received by where they came from
	// (ServerSource or a peer's IP:port), largest first.
	Sources   []Source      `json:"sources,omitempty"`
	Wasted    int64         `json:"wasted"`     // payload bytes received that were not useful
	BadPieces int64         `json:"bad_pieces"` // pieces that failed their hash check after download
	Elapsed   time.Duration `json:"elapsed"`
	// Took is the time from start until the image was complete; 0 while
	// it is not.
	Took time.Duration `json:"took,omitempty"`
	Err  string        `json:"error,omitempty"`
}

// Fraction is Done/Total in [0, 1].
func (p Progress) Fraction() float64 {
	if p.Total <= 0 {
		return 0
	}
	return float64(p.Done) / float64(p.Total)
}

// ETA estimates the time left at the current rate; 0 when unknown.
func (p Progress) ETA() time.Duration {
	if p.Rate <= 0 || p.Done >= p.Total {
		return 0
	}
	return time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second)).Round(time.Second)
}

// Line is the one-line form for logs and non-terminal output.
func (p Progress) Line() string {
	var b strings.Builder
	rate := p.Rate
	if p.State == StateSeeding {
		rate = p.UpRate
	}
	fmt.Fprintf(&b, "%s %5.1f%% %s/%s %s/s", p.State, 100*p.Fraction(),
		bytesize.Format(p.Done), bytesize.Format(p.Total), bytesize.Format(int64(rate)))
	if eta := p.ETA(); eta > 0 {
		fmt.Fprintf(&b, " eta %s", eta)
	}
	if p.State == StateDownloading || p.State == StateSeeding {
		fmt.Fprintf(&b, " peers %d (%d seeders) up %s", p.Peers, p.Seeders, bytesize.Format(p.Uploaded))
	}
	return b.String()
}

// Bar renders a progress bar of the given width for a terminal.
func (p Progress) Bar(width int) string {
	line := p.Line()
	barW := width - len(line) - 3
	if barW < 10 {
		return line
	}
	fill := int(math.Round(p.Fraction() * float64(barW)))
	return "[" + strings.Repeat("=", fill) + strings.Repeat(" ", barW-fill) + "] " + line
}

// rateMeter smooths a byte counter into a rate (exponentially weighted
// over a few seconds), so a progress line does not jump.
type rateMeter struct {
	mu    sync.Mutex
	last  time.Time
	bytes int64
	rate  float64
}

func (m *rateMeter) update(now time.Time, total int64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last.IsZero() {
		m.last, m.bytes = now, total
		return 0
	}
	dt := now.Sub(m.last).Seconds()
	if dt < 0.2 {
		return m.rate
	}
	inst := float64(total-m.bytes) / dt
	const tau = 3.0 // seconds
	alpha := 1 - math.Exp(-dt/tau)
	if m.rate == 0 {
		m.rate = inst
	} else {
		m.rate += alpha * (inst - m.rate)
	}
	m.last, m.bytes = now, total
	return m.rate
}

// ReportEvery calls f every period until the returned stop is called,
// then once more (the final figures): progress on long work, for the
// swarm, hashing and capture's upload alike.
func ReportEvery(ctx context.Context, period time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f()
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-exited
		f()
	}
}
