package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxeswarm/pxeswarm/imager"
)

// progressPrinter shows progress as a redrawn bar on a terminal, or as a
// plain line every few seconds (and at state changes) otherwise.
type progressPrinter struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	width  int
	every  time.Duration
	last   time.Time
	lastSt imager.State
	drawn  bool
	name   string
}

func newProgressPrinter(name string, every time.Duration) *progressPrinter {
	p := &progressPrinter{w: os.Stdout, every: every, name: name, width: 100}
	if ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ); err == nil {
		p.tty = true
		if ws.Col > 20 {
			p.width = int(ws.Col)
		}
	}
	return p
}

func (p *progressPrinter) show(pr imager.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r%s", pr.Bar(p.width-1))
		p.drawn = true
		return
	}
	now := time.Now()
	if pr.State == p.lastSt && now.Sub(p.last) < p.every {
		return
	}
	p.last, p.lastSt = now, pr.State
	fmt.Fprintf(p.w, "%s: %s\n", p.name, pr.Line())
}

// done ends the bar's line on a terminal.
func (p *progressPrinter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
