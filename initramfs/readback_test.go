package initramfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/partition"
)

// diskWith writes parts into one disk image file at 1 MiB and 5 MiB, as
// the table the tests make places them, and returns the places.
func diskWith(t testing.TB, parts [][]byte) (string, []partition.Place) {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var places []partition.Place
	off := int64(MiB)
	for i, p := range parts {
		if _, err := f.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		size := (int64(len(p)) + MiB - 1) / MiB * MiB
		places = append(places, partition.Place{Number: i + 1, Path: disk, Offset: off, Size: size, Length: int64(len(p))})
		off += size
	}
	if err := f.Truncate(off); err != nil {
		t.Fatal(err)
	}
	return disk, places
}

func TestReadBack(t *testing.T) {
	im, _, parts := testImage(t, "demo", 3)
	disk, places := diskWith(t, parts)
	opened := openParts(t, places)
	var seen []int64
	got, err := readBack(context.Background(), opened, im, func(done int64) { seen = append(seen, done) })
	if err != nil {
		t.Fatalf("readBack = %v", err)
	}
	if want := wholeSum(parts); got != want {
		t.Errorf("readBack = %s, want %s", got, want)
	}
	if len(seen) == 0 || seen[len(seen)-1] != im.Length {
		t.Errorf("readBack progress %v, want it to end at %d", seen, im.Length)
	}

	// One flipped byte early in part 2 (part 1 is 3 MiB + 12345 bytes), in
	// the piece that straddles parts 1 and 2.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	at := places[1].Offset + 100
	piece := (places[0].Length + 100) / im.PieceLength
	f.ReadAt(b, at)
	b[0] ^= 0x40
	f.WriteAt(b, at)
	f.Close()
	_, err = readBack(context.Background(), opened, im, nil)
	if want := fmt.Sprintf("piece %d ", piece); !errors.Is(err, ErrReadBack) || !strings.Contains(err.Error(), want) {
		t.Errorf("readBack of a disk with a flipped byte = %v, want ErrReadBack naming piece %d", err, piece)
	}

	// A disk shorter than the image.
	os.Truncate(disk, places[1].Offset+10)
	if _, err := readBack(context.Background(), opened, im, nil); err == nil || !strings.Contains(err.Error(), "read back the image at byte") {
		t.Errorf("readBack of a truncated disk = %v, want a read error", err)
	}
	// Parts that do not match the image.
	if _, err := readBack(context.Background(), opened[:1], im, nil); err == nil {
		t.Errorf("readBack with one part for two files = nil, want an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	os.Truncate(disk, 16*MiB)
	if _, err := readBack(ctx, opened, im, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("readBack with a canceled context = %v, want context.Canceled", err)
	}
}

// BenchmarkReadBack measures the read-back of a 256 MiB image in 8 MiB
// pieces from a file (from the page cache after the first round: the
// hashing cost, not the disk's).
func BenchmarkReadBack(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "part.img")
	f, _ := os.Create(src)
	buf := make([]byte, MiB)
	for i := range 256 {
		for j := range buf {
			buf[j] = byte(i*31 + j)
		}
		f.Write(buf)
	}
	f.Close()
	im, err := imager.Create(context.Background(), slog.New(slog.DiscardHandler), imager.CreateConfig{Sources: []string{src}, Parts: []imager.PartInfo{{Number: 1}}})
	if err != nil {
		b.Fatal(err)
	}
	parts := openParts(b, []partition.Place{{Number: 1, Path: src, Size: im.Length, Length: im.Length}})
	b.SetBytes(im.Length)
	for b.Loop() {
		if _, err := readBack(context.Background(), parts, im, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// openParts opens places as the agent does, closed at the end of the test.
func openParts(t testing.TB, places []partition.Place) []imager.Part {
	t.Helper()
	parts, closeAll, err := partition.OpenParts(places)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAll() })
	return parts
}
