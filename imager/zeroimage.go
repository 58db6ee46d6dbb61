package imager

import (
	"crypto/sha1"
	"fmt"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/pxeswarm/pxeswarm/internal/version"
)

// ZeroImage returns the torrent Create makes with Raw of one regular file
// called name holding size bytes of zeros (a sparse file): one whole-disk
// part, no partition table, every byte shipped. Its pieces all hash the
// same, so it hashes one piece of zeros (and the short last one) instead
// of reading size bytes: a 256 GiB image costs milliseconds, not minutes
// of SHA-1. It is for measurements at full scale (bench's memory figure);
// every real image comes from Create. pieceLength 0 means
// PieceLengthFor(size), as in Create.
func ZeroImage(name string, size, pieceLength int64) (*Image, error) {
	if name == "" || size <= 0 {
		return nil, fmt.Errorf("zero image %q of %d bytes: want a name and a positive size", name, size)
	}
	if pieceLength == 0 {
		pieceLength = PieceLengthFor(size)
	}
	if err := CheckPieceLength(pieceLength); err != nil {
		return nil, err
	}
	n := (size + pieceLength - 1) / pieceLength
	full := sha1.Sum(make([]byte, pieceLength))
	pieces := make([]byte, 0, n*sha1.Size)
	for range n - 1 {
		pieces = append(pieces, full[:]...)
	}
	last := sha1.Sum(make([]byte, size-(n-1)*pieceLength))
	pieces = append(pieces, last[:]...)
	info := infoDict{
		Name:        name,
		PieceLength: pieceLength,
		Pieces:      pieces,
		Files:       []fileEntry{{Length: size, Path: []string{name}}},
		Layout:      &Layout{Parts: []PartInfo{{Number: 0, Size: size}}},
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode info: %w", err)
	}
	mi := &metainfo.MetaInfo{InfoBytes: infoBytes, CreationDate: time.Now().Unix(), CreatedBy: "pxeswarm " + version.String()}
	data, err := bencode.Marshal(mi)
	if err != nil {
		return nil, fmt.Errorf("encode torrent: %w", err)
	}
	return Parse(data)
}
