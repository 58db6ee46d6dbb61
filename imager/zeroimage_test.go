package imager

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestZeroImageMatchesCreate checks that ZeroImage makes the very torrent
// Create makes with Raw of a sparse file of zeros: the same info
// dictionary (info-hash), at the default piece length and at a given one,
// with a short last piece and with none.
func TestZeroImageMatchesCreate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		size, piece int64
	}{
		{"short-last", 5*MinPieceLength + 1000, 0},
		{"whole", 8 * MinPieceLength, 0},
		{"given-piece", 3<<20 + 4096, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, tc.size); err != nil {
				t.Fatal(err)
			}
			want, err := Create(context.Background(), slog.New(slog.DiscardHandler),
				CreateConfig{Sources: []string{path}, Raw: true, PieceLength: tc.piece})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ZeroImage("disk.img", tc.size, tc.piece)
			if err != nil {
				t.Fatal(err)
			}
			if got.InfoHash != want.InfoHash {
				t.Errorf("ZeroImage info-hash %s, Create's %s\nZeroImage info: %q\nCreate info:    %q",
					got.InfoHash, want.InfoHash, got.Meta.InfoBytes, want.Meta.InfoBytes)
			}
			if got.NumPieces() != want.NumPieces() || got.PieceLength != want.PieceLength {
				t.Errorf("ZeroImage %d pieces of %d, Create %d of %d", got.NumPieces(), got.PieceLength, want.NumPieces(), want.PieceLength)
			}
		})
	}
}

// TestZeroImageFullScale checks the figures of issue 20's image: 256 GiB
// at the default piece length is 32,768 pieces of 8 MiB.
func TestZeroImageFullScale(t *testing.T) {
	im, err := ZeroImage("disk.img", 256<<30, 0)
	if err != nil {
		t.Fatal(err)
	}
	if im.PieceLength != DefaultPieceLength || im.NumPieces() != 32768 || im.Length != 256<<30 {
		t.Errorf("256 GiB zero image: %d pieces of %d bytes, %d bytes; want 32768 of %d, %d", im.NumPieces(), im.PieceLength, im.Length, DefaultPieceLength, int64(256<<30))
	}
}
