package initramfs

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
)

// Console is where the agent talks to the person at the machine: markers,
// the progress bar and (when the caller routes its log here) log lines.
// On a terminal the bar redraws in place with a carriage return; a marker
// or log line first ends the bar's line, so nothing is written over. On
// anything else (a file, a test buffer) progress is a plain line every
// few seconds. It is safe for concurrent use.
type Console struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	width    int
	bar      bool      // the current line holds a progress bar
	lastLine time.Time // of the last plain progress line
	lastSt   imager.State
	lastDone int64
}

// NewConsole wraps w. w is treated as a terminal when it is an *os.File
// on a tty (the serial or VGA console).
func NewConsole(w io.Writer) *Console {
	c := &Console{w: w, width: 79}
	if f, ok := w.(*os.File); ok {
		c.tty = isTerminal(f)
	}
	return c
}

// Write writes b as whole lines, after ending a progress bar.
func (c *Console) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endBarLocked()
	return c.w.Write(b)
}

// Println prints one line.
func (c *Console) Println(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endBarLocked()
	fmt.Fprintln(c.w, s)
}

// Drain waits until the console has shown everything written so far
// (before a reboot or power-off). On a terminal it waits for the output to
// leave (tcdrain). Otherwise, as under u-root's init, which passes our
// output through a pipe and copies it to every console itself, there is
// no way to know: it gives the copier a second. (Without this a demo
// machine lost its "rebooting" marker: the kernel rebooted first.)
func (c *Console) Drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.files() {
		if isTerminal(f) {
			drainTTY(f)
			continue
		}
		time.Sleep(time.Second)
		return
	}
}

// files lists the *os.File behind c.w: the agent under u-root's init
// writes to stderr; other writers are not drained.
func (c *Console) files() []*os.File {
	if f, ok := c.w.(*os.File); ok {
		return []*os.File{f}
	}
	return nil
}

func (c *Console) endBarLocked() {
	if c.bar {
		fmt.Fprintln(c.w)
		c.bar = false
	}
}

// plainEvery is how often a non-terminal console gets a progress line.
const plainEvery = 5 * time.Second

// Progress shows p: a redrawn bar on a terminal, a line every few
// seconds (and at each state change, and when Done reaches Total)
// elsewhere.
func (c *Console) Progress(p imager.Progress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty {
		line := p.Bar(c.width)
		if pad := c.width - len(line); pad > 0 {
			line += strings.Repeat(" ", pad)
		}
		fmt.Fprint(c.w, "\r"+line)
		c.bar = true
		return
	}
	finished := p.Total > 0 && p.Done == p.Total && c.lastDone != p.Total
	if p.State == c.lastSt && time.Since(c.lastLine) < plainEvery && !finished {
		return
	}
	c.lastSt, c.lastLine, c.lastDone = p.State, time.Now(), p.Done
	fmt.Fprintln(c.w, MarkProgress+" "+p.Line())
}

// console returns w as a *Console, wrapping it if needed.
func console(w io.Writer) *Console {
	if c, ok := w.(*Console); ok {
		return c
	}
	if w == nil {
		w = os.Stdout
	}
	return NewConsole(w)
}

// SetTerminal says whether the console is a terminal (the bar is redrawn
// in place) or not (plain progress lines), for writers NewConsole cannot
// judge, such as an io.MultiWriter over the console and stderr.
func (c *Console) SetTerminal(tty bool) {
	c.mu.Lock()
	c.tty = tty
	c.mu.Unlock()
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return isTerminal(f) }
