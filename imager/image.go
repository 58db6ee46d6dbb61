package imager

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/pxeswarm/pxeswarm/internal/atomicfile"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// Piece sizes. Large pieces keep the metadata small and the request
// machinery cheap (anacrolix issue #897: request building scales with the
// piece count); enough pieces keep the swarm close behind the seeder (a
// piece is passed on only once it is whole). [PieceLengthFor] picks between
// the two; see docs/SWARM.md.
const (
	// DefaultPieceLength is the piece size of images of 16 GiB and more.
	DefaultPieceLength = 8 << 20
	MinPieceLength     = 256 << 10
	MaxPieceLength     = 64 << 20
	// TargetPieces is the piece count PieceLengthFor aims at for images
	// under 16 GiB.
	TargetPieces = 2048
	// MaxTorrentBytes bounds what Load reads: 256 GB at 1 MiB pieces is
	// about 5 MB of hashes.
	MaxTorrentBytes = 16 << 20
)

// PieceLengthFor is the default piece size for an image of size bytes:
// the smallest power of two from MinPieceLength that cuts it into at most
// TargetPieces pieces, and never more than DefaultPieceLength. A 128 MiB
// image gets 256 KiB pieces (512), 1 GiB gets 512 KiB (2048), 16 GiB and
// up get 8 MiB (256 GB: 30,518 pieces).
//
// Why: a machine can pass a piece on only once it holds all of it, so the
// swarm runs a few piece times behind the seeder, and the seeder, sharing
// its link among N machines, needs N piece times to put each piece into
// the swarm. With few pieces that lag is a large part of the transfer: on
// the bench LAN, 16 machines took 1.36–1.39× the floor for a 128 MiB image
// at 1 MiB pieces and 1.25–1.34× at 256 KiB (128 KiB: no better, more CPU),
// measured before Tuning.PartnerRequests took 256 KiB to 1.14–1.16×.
func PieceLengthFor(size int64) int64 {
	p := int64(MinPieceLength)
	for p < DefaultPieceLength && size > p*TargetPieces {
		p *= 2
	}
	return p
}

// Layout is the partition layout an image was taken from. It is stored in
// the info dictionary under the key "pxeswarm", so the info-hash, and with
// it every peer and the signed plan, covers it. Other BitTorrent clients
// ignore the key.
type Layout struct {
	// Table is "gpt", "mbr", or "" when the image carries no table of its
	// own (a single partition or a whole-disk image written as is).
	Table string `bencode:"table" json:"table"`
	// Parts has one entry per torrent file, in file order.
	Parts []PartInfo `bencode:"parts" json:"parts"`
}

// PartInfo says where one torrent file goes.
type PartInfo struct {
	Number int    `bencode:"number" json:"number"`                   // partition number on the target disk, 1-based; 0 = whole disk
	Start  int64  `bencode:"start,omitempty" json:"start,omitempty"` // byte offset on the source disk, if known
	Size   int64  `bencode:"size" json:"size"`                       // bytes of the partition (at least the file's length)
	Type   string `bencode:"type,omitempty" json:"type,omitempty"`   // GPT type GUID or MBR type byte, if known
	Label  string `bencode:"label,omitempty" json:"label,omitempty"` // GPT partition name or filesystem label
	GUID   string `bencode:"guid,omitempty" json:"guid,omitempty"`   // GPT unique partition GUID
	// Extents, if any, are the byte ranges of the partition the torrent
	// file holds, packed in order (a used-block image; see OnExtents).
	// None: the file is the partition's first bytes, all of them.
	Extents Extents `bencode:"extents,omitempty" json:"-"`
	// Gaps says how a target treats the bytes between the extents:
	// GapsFree or GapsZero (see FinishGaps). Set exactly when Extents are.
	Gaps string `bencode:"gaps,omitempty" json:"gaps,omitempty"`
	// Filesystem is what the extents were read from ("ext4", "fat32",
	// "ntfs", "swap"), for messages.
	Filesystem string `bencode:"fs,omitempty" json:"fs,omitempty"`
}

// Span is the bytes of the partition a target needs for this part: its
// whole size for a used-block part (the filesystem spans it, gaps and
// all), else the file's length.
func (f File) Span() int64 {
	if len(f.Part.Extents) > 0 {
		return f.Part.Size
	}
	return f.Length
}

// infoDict is the v1 info dictionary as pxeswarm writes it. Field order
// does not matter: the bencode encoder sorts keys.
type infoDict struct {
	Files []fileEntry `bencode:"files"`
	// Length is a single-file torrent's one file (BEP 3), as
	// transmission-create and other stock tools make them.
	Length      int64   `bencode:"length,omitempty"`
	Name        string  `bencode:"name"`
	PieceLength int64   `bencode:"piece length"`
	Pieces      []byte  `bencode:"pieces"`
	Layout      *Layout `bencode:"pxeswarm,omitempty"`
}

type fileEntry struct {
	Length int64    `bencode:"length"`
	Path   []string `bencode:"path"`
}

// File is one part of an image: one partition's bytes.
type File struct {
	Path   string   // name inside the torrent
	Offset int64    // offset in the torrent's linear byte range
	Length int64    // bytes
	Part   PartInfo // where it goes on the target
}

// Image is a parsed, validated image torrent.
type Image struct {
	Meta        *metainfo.MetaInfo
	InfoHash    metainfo.Hash
	Name        string
	PieceLength int64
	Length      int64 // sum of all files
	Files       []File
	Layout      Layout
	// Stock: made by another tool (no pxeswarm layout in the info
	// dictionary), so likely seeded by stock BitTorrent clients too.
	Stock  bool
	pieces []byte // 20-byte SHA-1 per piece
}

// NumPieces is the number of pieces in the image.
func (im *Image) NumPieces() int { return len(im.pieces) / sha1.Size }

// PieceHash returns piece i's SHA-1.
func (im *Image) PieceHash(i int) [sha1.Size]byte {
	var h [sha1.Size]byte
	copy(h[:], im.pieces[i*sha1.Size:])
	return h
}

// pieceSize returns the length of piece i (the last one may be short).
func (im *Image) pieceSize(i int) int64 {
	return min(im.PieceLength, im.Length-int64(i)*im.PieceLength)
}

// String names the image for logs: name and short info-hash.
func (im *Image) String() string {
	return fmt.Sprintf("%s (%s, %s)", im.Name, bytesize.Format(im.Length), hex.EncodeToString(im.InfoHash[:4]))
}

// Write encodes the torrent file.
func (im *Image) Write(w io.Writer) error { return im.Meta.Write(w) }

// WriteFile writes the torrent file to path atomically.
func (im *Image) WriteFile(path string) error {
	var buf bytes.Buffer
	if err := im.Write(&buf); err != nil {
		return fmt.Errorf("encode torrent: %w", err)
	}
	if err := atomicfile.Write(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write torrent %s: %w", path, err)
	}
	return nil
}

// LoadFile reads and validates a torrent file.
func LoadFile(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open torrent: %w", err)
	}
	defer f.Close()
	im, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return im, nil
}

// LoadURL fetches a torrent over HTTP(S) and validates it.
func LoadURL(ctx context.Context, client *http.Client, url string) (*Image, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("torrent URL %q: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch torrent %s: is the server up and reachable? %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch torrent %s: server answered %s: check the image name and that the server publishes it", url, resp.Status)
	}
	im, err := Load(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return im, nil
}

// Open loads a torrent from a path or an http(s) URL.
func Open(ctx context.Context, pathOrURL string) (*Image, error) {
	if strings.HasPrefix(pathOrURL, "http://") || strings.HasPrefix(pathOrURL, "https://") {
		return LoadURL(ctx, nil, pathOrURL)
	}
	return LoadFile(pathOrURL)
}

// Load reads and validates a torrent. Anything that is not a complete,
// self-consistent v1 image torrent is an error wrapping [ErrBadTorrent].
func Load(r io.Reader) (*Image, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxTorrentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrBadTorrent, err)
	}
	if len(data) > MaxTorrentBytes {
		return nil, fmt.Errorf("%w: larger than %s: this is not a pxeswarm image torrent", ErrBadTorrent, bytesize.Format(MaxTorrentBytes))
	}
	return Parse(data)
}

// Parse validates a torrent held in memory. See [Load].
func Parse(data []byte) (*Image, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: recreate it with `pxeswarm mktorrent` or download it again", ErrBadTorrent, fmt.Sprintf(format, args...))
	}
	var mi metainfo.MetaInfo
	if err := bencode.Unmarshal(data, &mi); err != nil {
		return nil, bad("not a torrent file (%v)", err)
	}
	if len(mi.InfoBytes) == 0 {
		return nil, bad("no info dictionary")
	}
	var info infoDict
	if err := bencode.Unmarshal(mi.InfoBytes, &info); err != nil {
		return nil, bad("info dictionary: %v", err)
	}
	im := &Image{
		Meta:        &mi,
		InfoHash:    mi.HashInfoBytes(),
		Name:        info.Name,
		PieceLength: info.PieceLength,
		pieces:      info.Pieces,
	}
	if im.Name == "" {
		return nil, bad("image has no name")
	}
	pl := info.PieceLength
	if pl < 16<<10 || pl > MaxPieceLength || pl&(pl-1) != 0 {
		return nil, bad("piece length %d is not a power of two between 16 KiB and %s", pl, bytesize.Format(MaxPieceLength))
	}
	switch {
	case len(info.Files) == 0 && info.Length > 0:
		// A single-file torrent (BEP 3) from a stock tool: its one file
		// is the whole target.
		if info.Layout != nil {
			return nil, bad("a single-file torrent with a pxeswarm layout")
		}
		info.Files = []fileEntry{{Length: info.Length, Path: []string{info.Name}}}
		info.Layout = &Layout{Parts: []PartInfo{{Number: 0, Size: info.Length}}}
		im.Stock = true
	case len(info.Files) == 0:
		return nil, bad("no files: a v2-only torrent is not an image torrent (BitTorrent v1 is needed)")
	case info.Layout == nil:
		// An ordinary multi-file torrent: its files are parts 1 to n,
		// in order, one target each; no partition table.
		l := &Layout{}
		for i, fe := range info.Files {
			l.Parts = append(l.Parts, PartInfo{Number: i + 1, Size: fe.Length})
		}
		info.Layout = l
		im.Stock = true
	}
	if len(info.Layout.Parts) != len(info.Files) {
		return nil, bad("layout has %d parts for %d files", len(info.Layout.Parts), len(info.Files))
	}
	switch info.Layout.Table {
	case "", "gpt", "mbr":
	default:
		return nil, bad("unknown partition table %q", info.Layout.Table)
	}
	im.Layout = *info.Layout
	seen := map[int]bool{}
	for i, fe := range info.Files {
		part := info.Layout.Parts[i]
		if fe.Length <= 0 {
			return nil, bad("file %d has length %d", i, fe.Length)
		}
		if part.Size < fe.Length {
			return nil, bad("partition %d is %d bytes but holds a %d-byte file", part.Number, part.Size, fe.Length)
		}
		if len(part.Extents) > 0 || part.Gaps != "" {
			if err := part.Extents.check(part.Size, fe.Length); err != nil {
				return nil, bad("partition %d: %v", part.Number, err)
			}
			if len(part.Filesystem) > 16 || strings.Trim(part.Filesystem, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
				return nil, bad("partition %d: filesystem name %q", part.Number, part.Filesystem)
			}
			if part.Gaps != GapsFree && part.Gaps != GapsZero {
				return nil, bad("partition %d: gaps %.40q, want %q or %q with extents (a newer pxeswarm made this image? update this one)",
					part.Number, part.Gaps, GapsFree, GapsZero)
			}
		}
		if part.Number < 0 || part.Number > 128 || seen[part.Number] {
			return nil, bad("partition number %d is out of range or repeated", part.Number)
		}
		seen[part.Number] = true
		if im.Length > (1<<62)-fe.Length {
			return nil, bad("image too large")
		}
		im.Files = append(im.Files, File{
			Path:   strings.Join(fe.Path, "/"),
			Offset: im.Length,
			Length: fe.Length,
			Part:   part,
		})
		im.Length += fe.Length
	}
	want := (im.Length + pl - 1) / pl
	if int64(len(info.Pieces)) != want*sha1.Size {
		return nil, bad("%d bytes of piece hashes, want %d for %d pieces (truncated?)", len(info.Pieces), want*sha1.Size, want)
	}
	return im, nil
}
