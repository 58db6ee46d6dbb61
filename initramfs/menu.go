package initramfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrNoChoice: a choice was needed and nobody made it (the console has
// no input).
var ErrNoChoice = errors.New("nobody chose")

// choose asks the person at the console to pick one of items: it prints
// MarkChoose with the question, the numbered items, and reads a number
// and Enter from Config.Input, asking again after anything else. It is
// only called when there is a real choice (two or more items).
func (a *agent) choose(ctx context.Context, question string, items []string) (int, error) {
	if a.in == nil {
		a.in = bufio.NewReader(a.cfg.Input)
	}
	a.con.Println(fmt.Sprintf("%s %s", MarkChoose, question))
	for i, it := range items {
		a.con.Println(fmt.Sprintf("  %d) %s", i+1, it))
	}
	asked := false
	for {
		if !asked {
			a.con.Println(fmt.Sprintf("Type 1 to %d and press Enter:", len(items)))
			asked = true
		}
		line, err := readLine(ctx, a.in)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: the console has no input", ErrNoChoice)
			}
			return 0, err
		}
		if strings.TrimSpace(line) == "" {
			continue // Enter alone, or the LF of a CR LF
		}
		n, err := strconv.Atoi(strings.TrimSpace(line))
		if err == nil && n >= 1 && n <= len(items) {
			a.log.Info("chosen at the console", "question", question, "choice", items[n-1])
			a.con.Println(fmt.Sprintf("%s %d %s", MarkChosen, n, items[n-1]))
			return n - 1, nil
		}
		a.con.Println(fmt.Sprintf("%q is not a number from 1 to %d. Type 1 to %d and press Enter:", clipText(strings.TrimSpace(line), 20), len(items), len(items)))
	}
}

// readLine reads one line, giving up when ctx ends (the read itself then
// stays blocked until input arrives, which is harmless on a console).
func readLine(ctx context.Context, r *bufio.Reader) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// A line ends at LF or CR: a serial terminal's Enter sends CR,
		// which a tty in raw mode passes through unchanged.
		var b strings.Builder
		for {
			c, err := r.ReadByte()
			if err != nil {
				if err == io.EOF && b.Len() > 0 {
					err = nil
				}
				ch <- res{b.String(), err}
				return
			}
			if c == '\n' || c == '\r' {
				ch <- res{b.String(), nil}
				return
			}
			if b.Len() < 256 {
				b.WriteByte(c)
			}
		}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
