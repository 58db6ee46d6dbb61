package imager

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/pxeswarm/pxeswarm/internal/atomicfile"
)

// completion is the in-memory record of which pieces are verified on the
// targets. It answers anacrolix's Completion queries with Ok=true always,
// so anacrolix never hashes a piece at start on its own: the check mode
// decided the initial state (all, none, or what verify found).
type completion struct {
	mu    sync.RWMutex
	bits  []bool
	count int
}

func newCompletion(n int) *completion { return &completion{bits: make([]bool, n)} }

func (c *completion) get(i int) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bits[i]
}

func (c *completion) set(i int, v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bits[i] != v {
		c.bits[i] = v
		if v {
			c.count++
		} else {
			c.count--
		}
	}
}

func (c *completion) setAll(v bool) {
	for i := range c.bits {
		c.set(i, v)
	}
}

func (c *completion) complete() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.count
}

const stateMagic = "pxeswarm-state-v1\n"

// marshal encodes the state: magic, info-hash, piece count, bitmap.
func (c *completion) marshal(ih metainfo.Hash) []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var b bytes.Buffer
	b.WriteString(stateMagic)
	b.Write(ih[:])
	binary.Write(&b, binary.BigEndian, uint32(len(c.bits)))
	bm := make([]byte, (len(c.bits)+7)/8)
	for i, v := range c.bits {
		if v {
			bm[i/8] |= 0x80 >> (i % 8)
		}
	}
	b.Write(bm)
	return b.Bytes()
}

// unmarshal loads a state saved by marshal for the same image.
func (c *completion) unmarshal(ih metainfo.Hash, data []byte) error {
	n := len(c.bits)
	want := len(stateMagic) + len(ih) + 4 + (n+7)/8
	if len(data) != want || string(data[:len(stateMagic)]) != stateMagic {
		return fmt.Errorf("%w: not a pxeswarm state file for %d pieces: delete it, or use --check verify", ErrBadState, n)
	}
	rest := data[len(stateMagic):]
	if !bytes.Equal(rest[:len(ih)], ih[:]) {
		return fmt.Errorf("%w: saved for another image (%x): delete it, or use --check verify", ErrBadState, rest[:len(ih)])
	}
	rest = rest[len(ih):]
	if int(binary.BigEndian.Uint32(rest)) != n {
		return fmt.Errorf("%w: piece count differs: delete it, or use --check verify", ErrBadState)
	}
	bm := rest[4:]
	if n%8 != 0 && bm[len(bm)-1]&(0xff>>(n%8)) != 0 {
		return fmt.Errorf("%w: bits set past the last piece: not written by pxeswarm; delete it, or use --check verify", ErrBadState)
	}
	for i := range n {
		c.set(i, bm[i/8]&(0x80>>(i%8)) != 0)
	}
	return nil
}

// writeState writes a state made by marshal so that a crash leaves the
// old state or the new one (atomicfile).
func writeState(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o644); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
