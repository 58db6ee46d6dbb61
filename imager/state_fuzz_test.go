package imager

import (
	"errors"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
)

// FuzzLoadState: a resume state file (left on a disk or a USB stick, or
// planted) either loads for exactly this image and piece count, or is
// refused with ErrBadState; loading never panics, and what loads saves
// back to the same bytes.
func FuzzLoadState(f *testing.F) {
	ih := metainfo.Hash{1, 2, 3}
	for _, n := range []int{1, 7, 8, 9, 100} {
		c := newCompletion(n)
		c.set(0, true)
		c.set(n-1, true)
		f.Add(n, c.marshal(ih))
	}
	f.Add(3, []byte(stateMagic))
	f.Add(0, []byte{})
	f.Fuzz(func(t *testing.T, n int, data []byte) {
		if n < 0 || n > 1<<16 {
			return
		}
		c := newCompletion(n)
		err := c.unmarshal(ih, data)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("unmarshal error %v does not wrap ErrBadState", err)
			}
			return
		}
		if got := c.marshal(ih); string(got) != string(data[:len(got)]) || len(got) != len(data) {
			t.Fatalf("a loaded state saves back differently:\n got %x\nwant %x", got, data)
		}
	})
}
