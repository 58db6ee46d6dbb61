package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Capture: an uploader (`pxeswarm capture`, later the agent) reads a
// golden disk and sends its used bytes to the server, which makes an
// image of them. The exchange, all over HTTP(S):
//
//  1. the admin creates a capture (POST /api/captures, admin token) and
//     gets its ID and a one-time upload secret;
//  2. the uploader sends the [Manifest] (PUT /api/captures/{id}/manifest):
//     the disk's layout and, per partition, the extents it will send;
//  3. it streams the extents' bytes, partitions in order and extents in
//     order, as one logical stream (PUT /api/captures/{id}/data with
//     [UploadOffsetHeader]); after a dropped connection it asks the
//     server's [CaptureState].Received and goes on from there;
//  4. it asks the server to finish (POST /api/captures/{id}/finish): the
//     server hashes what it received itself, makes the torrent and
//     publishes the image.
//
// Every call after the first carries the upload secret (Authorization:
// Bearer …), which the server accepts only while the capture is open.

// ActionCapture is a plan's action for a machine that uploads its disk to
// the server (the agent's side comes later: Plan.Check refuses it for
// now).
const ActionCapture = "capture"

// UploadOffsetHeader carries the stream offset of a data request's first
// byte; the server answers with the offset it has reached (tus-like).
const UploadOffsetHeader = "Upload-Offset"

// Bounds of a manifest. It comes from the network: the server checks
// every field before it allocates anything by it.
const (
	// MaxCaptureParts bounds the partitions of one capture (GPT's usual
	// 128 entries).
	MaxCaptureParts = 128
	// MaxCaptureExtents bounds one partition's extents. It equals
	// imager.MaxExtents (the bound of a used-block part in a torrent);
	// protocol imports no imager, so a test in package capture checks
	// they agree.
	MaxCaptureExtents = 1 << 16
	// MaxCaptureExtentsTotal bounds the extents of all partitions.
	MaxCaptureExtentsTotal = 1 << 20
	// MaxCaptureBytes bounds a partition's size and the whole stream
	// (64 TiB).
	MaxCaptureBytes = 1 << 46
	// MaxManifestBytes bounds the manifest's JSON (a full manifest of
	// 2^20 extents is about 40 MiB).
	MaxManifestBytes = 64 << 20
)

// ErrBadManifest: a manifest's fields are invalid.
var ErrBadManifest = errors.New("bad capture manifest")

// Manifest is what the uploader says about the disk before it sends any
// data: its layout and the extents of each partition it will send.
type Manifest struct {
	// Table is "gpt", "mbr" or "" (a disk without a table, captured whole
	// as one part, or a single partition).
	Table string `json:"table"`
	// DiskSize is the source disk's size in bytes.
	DiskSize int64 `json:"disk_size"`
	// Raw: the uploader was told to send every byte (--raw); no part has
	// extents, and the server makes the image without reading used maps.
	Raw   bool          `json:"raw,omitempty"`
	Parts []CapturePart `json:"parts"`
}

// CapturePart is one partition of a manifest.
type CapturePart struct {
	// Number is the partition number, 1-based; 0 is the whole disk (no
	// table).
	Number int    `json:"number"`
	Start  int64  `json:"start"`           // byte offset on the source disk
	Size   int64  `json:"size"`            // bytes
	Type   string `json:"type,omitempty"`  // GPT type GUID or MBR type byte ("0x83")
	Label  string `json:"label,omitempty"` // GPT partition name
	GUID   string `json:"guid,omitempty"`  // GPT unique partition GUID
	// Filesystem is what the uploader read the used map from ("ext4",
	// "fat32", "ntfs", "swap"); empty with no extents.
	Filesystem string `json:"fs,omitempty"`
	// Extents are [offset, length] byte ranges within the partition,
	// sorted and apart: the bytes sent. None: the whole partition is
	// sent (--raw, or a filesystem the uploader does not read).
	Extents [][2]int64 `json:"extents,omitempty"`
}

// Length is the bytes of the stream the part holds.
func (p CapturePart) Length() int64 {
	if len(p.Extents) == 0 {
		return p.Size
	}
	var n int64
	for _, e := range p.Extents {
		n += e[1]
	}
	return n
}

// Total is the bytes of the whole stream. Call it on a checked manifest.
func (m *Manifest) Total() int64 {
	var n int64
	for _, p := range m.Parts {
		n += p.Length()
	}
	return n
}

// Check validates a manifest; errors wrap ErrBadManifest and say what is
// wrong. It holds every rule the server relies on: bounded counts and
// sizes, partitions inside the disk, in order and apart, extents sorted,
// non-empty, inside their partition and apart, and no sum that overflows.
func (m *Manifest) Check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(format, args...))
	}
	switch m.Table {
	case "", "gpt", "mbr":
	default:
		return bad("table %q: want gpt, mbr or empty", Clip(m.Table, 20))
	}
	if m.DiskSize <= 0 || m.DiskSize > MaxCaptureBytes {
		return bad("disk_size %d: want 1 byte to 64 TiB", m.DiskSize)
	}
	if len(m.Parts) == 0 || len(m.Parts) > MaxCaptureParts {
		return bad("%d parts: want 1 to %d", len(m.Parts), MaxCaptureParts)
	}
	if m.Table == "" && len(m.Parts) != 1 {
		return bad("%d parts without a partition table: want one", len(m.Parts))
	}
	var total int64
	extents := 0
	seen := map[int]bool{}
	var prevEnd int64
	for i, p := range m.Parts {
		if p.Number < 0 || p.Number > MaxCaptureParts || seen[p.Number] {
			return bad("part %d: number %d is out of range (0-%d) or repeated", i, p.Number, MaxCaptureParts)
		}
		seen[p.Number] = true
		if (p.Number == 0) != (m.Table == "") {
			return bad("part %d: number %d with table %q: number 0 is the whole disk, without a table", i, p.Number, m.Table)
		}
		if p.Size <= 0 || p.Start < 0 || p.Start > m.DiskSize || p.Size > m.DiskSize-p.Start {
			return bad("part %d: %d bytes at %d do not fit the %d-byte disk", i, p.Size, p.Start, m.DiskSize)
		}
		if p.Start < prevEnd {
			return bad("part %d at %d overlaps or precedes the part before it (ends at %d): list parts in disk order", i, p.Start, prevEnd)
		}
		prevEnd = p.Start + p.Size
		for _, f := range []struct{ name, v string }{{"type", p.Type}, {"label", p.Label}, {"guid", p.GUID}, {"fs", p.Filesystem}} {
			if len(f.v) > 72 || strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return bad("part %d: %s %q: at most 72 printable characters", i, f.name, Clip(f.v, 40))
			}
		}
		if p.Filesystem != "" && strings.Trim(p.Filesystem, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			return bad("part %d: filesystem %q: lower-case letters and digits", i, Clip(p.Filesystem, 20))
		}
		if m.Raw && len(p.Extents) > 0 {
			return bad("part %d: extents in a raw capture: a raw capture sends every byte", i)
		}
		if len(p.Extents) > MaxCaptureExtents {
			return bad("part %d: %d extents, at most %d: merge across the smallest gaps", i, len(p.Extents), MaxCaptureExtents)
		}
		if extents += len(p.Extents); extents > MaxCaptureExtentsTotal {
			return bad("%d extents in all, at most %d", extents, MaxCaptureExtentsTotal)
		}
		var end, length int64
		for j, e := range p.Extents {
			off, n := e[0], e[1]
			if n <= 0 || off < end || off > p.Size || n > p.Size-off {
				return bad("part %d: extent %d (%d+%d) is empty, out of order, overlapping or outside the %d-byte partition", i, j, off, n, p.Size)
			}
			end = off + n
			length += n // <= p.Size: the extents are apart inside it
		}
		if len(p.Extents) == 0 {
			length = p.Size
			if p.Filesystem != "" {
				return bad("part %d: filesystem %q without extents", i, p.Filesystem)
			}
		}
		if length > MaxCaptureBytes-total {
			return bad("the stream is larger than 64 TiB")
		}
		total += length
	}
	return nil
}

// ParseManifest reads a manifest of at most MaxManifestBytes (no unknown
// fields, nothing after it) and checks it.
func ParseManifest(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrBadManifest, err)
	}
	if len(data) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadManifest, MaxManifestBytes)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: not a manifest (%v): uploader and server versions differ?", ErrBadManifest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the manifest", ErrBadManifest)
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// CaptureStatus is where a capture is in its life:
//
//	open → receiving → hashing → published
//
// or failed (with its error) from any of them. Only open and receiving
// take the upload secret.
type CaptureStatus string

const (
	CaptureOpen      CaptureStatus = "open"      // created; no manifest yet
	CaptureReceiving CaptureStatus = "receiving" // manifest accepted; data arrives
	CaptureHashing   CaptureStatus = "hashing"   // all data in; the server makes the torrent
	CapturePublished CaptureStatus = "published" // in the catalog, seeded
	CaptureFailed    CaptureStatus = "failed"    // stopped for good (Error); nothing published
)

// Open reports whether the capture still takes its upload secret.
func (s CaptureStatus) Open() bool { return s == CaptureOpen || s == CaptureReceiving }

// CaptureState is what the server says about a capture (GET
// /api/captures/{id}, and the answer to every capture call).
type CaptureState struct {
	ID string `json:"id"`
	// Name is the image name the admin asked for; Image is the name it
	// is published as, once published (Name, or Name-vN when Name was
	// taken: see docs/SERVER.md).
	Name  string        `json:"name"`
	Image string        `json:"image,omitempty"`
	MAC   string        `json:"mac,omitempty"`
	Disk  string        `json:"disk,omitempty"`
	State CaptureStatus `json:"state"`
	// Received is the stream offset the server holds (the next byte it
	// takes); Total the stream's length, from the manifest.
	Received int64 `json:"received"`
	Total    int64 `json:"total"`
	// BytesIn counts every data byte the server took in for this capture,
	// resent ones included (== Total when nothing was sent twice).
	BytesIn int64  `json:"bytes_in"`
	Error   string `json:"error,omitempty"`
	// InfoHash of the published image.
	InfoHash string `json:"info_hash,omitempty"`
}

// NewCapture is the body of POST /api/captures.
type NewCapture struct {
	Name string `json:"name"`           // image name (a new version if it exists)
	MAC  string `json:"mac,omitempty"`  // the machine captured, if known
	Disk string `json:"disk,omitempty"` // the disk, as the uploader names it
}

// CaptureCreated answers POST /api/captures: the state and the upload
// secret, which only this answer carries.
type CaptureCreated struct {
	CaptureState
	Secret string `json:"secret"`
}

// ValidCaptureID reports whether id has the form of the server's capture
// IDs: "c-" and 16 lower-case hex digits.
func ValidCaptureID(id string) bool {
	rest, ok := strings.CutPrefix(id, "c-")
	return ok && IsHex(rest, 16, 16)
}

// ValidImageName reports whether s can name an image: 1 to 128 letters,
// digits, '.', '_' and '-', not starting with '.'. Names go into URLs,
// file names and plans.
func ValidImageName(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// NewCaptureSecret returns a fresh upload secret: 24 random bytes in hex.
func NewCaptureSecret() (string, error) { return randomHex(24) }
