package partition

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/google/uuid"
	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// Table is a partition table as read from a disk or planned from a layout.
type Table struct {
	Kind string // "gpt" or "mbr"
	// GUID is the GPT disk GUID (upper case) or the MBR disk signature (8
	// hex digits). Empty in a plan means "make one up".
	GUID string
	// SectorSize is the logical sector size the table's LBAs count in.
	SectorSize int
	// Partitions in number order. Start and Size are in bytes.
	Partitions []Partition
	// Recovered is set when the primary GPT was damaged and the table was
	// read from the backup at the end of the disk.
	Recovered bool
}

// Align is where partitions without a start in the layout begin: on 1 MiB
// boundaries, as fdisk and Windows place them (good for 4 KiB sectors,
// SSD erase blocks and RAID stripes).
const Align = 1 << 20

// GPT geometry. go-diskfs writes 128 entries of 128 bytes, the 16 KiB
// minimum array of UEFI 2.10 §5.3.2, before the first partition and again
// before the backup header in the disk's last sector.
const (
	gptEntrySize  = 128
	gptArrayBytes = 128 * gptEntrySize
	// gptMaxEntries bounds what ReadTable accepts from a header before it
	// lets go-diskfs allocate the entry array (a CRC-valid header can claim
	// 2^32 entries of 2^32 bytes).
	gptMaxEntries = 4096
)

// Partition types used when the layout gives none, and the few MBR type
// bytes that have a GPT equivalent (and back).
var (
	defaultGPTType = string(gpt.LinuxFilesystem)
	defaultMBRType = byte(mbr.Linux)
	mbrToGPT       = map[byte]gpt.Type{
		0x07: gpt.MicrosoftBasicData, 0x0b: gpt.MicrosoftBasicData, 0x0c: gpt.MicrosoftBasicData,
		0x82: gpt.LinuxSwap, 0x83: gpt.LinuxFilesystem, 0x8e: gpt.LinuxLVM, 0xfd: gpt.LinuxRAID,
		0xef: gpt.EFISystemPartition,
	}
	gptToMBR = map[gpt.Type]byte{
		gpt.MicrosoftBasicData: 0x07, gpt.LinuxSwap: 0x82, gpt.LinuxFilesystem: 0x83,
		gpt.LinuxLVM: 0x8e, gpt.LinuxRAID: 0xfd, gpt.EFISystemPartition: 0xef,
	}
)

func checkSectorSize(ss int) error {
	switch ss {
	case 512, 1024, 2048, 4096:
		return nil
	}
	return fmt.Errorf("logical sector size %d: want 512, 1024, 2048 or 4096", ss)
}

// ReadTable reads the GPT, or failing that the MBR, of a disk of size bytes
// with the given logical sector size. A disk without a readable table is
// an error wrapping [ErrNoTable]. GPT entries that lie outside the disk are
// skipped, as the kernel skips them (block/partitions/efi.c is_pte_valid).
// Of an MBR only the four primary entries are read; an extended partition
// is listed as itself, not its logical partitions.
func ReadTable(r io.ReaderAt, size int64, sectorSize int) (*Table, error) {
	if err := checkSectorSize(sectorSize); err != nil {
		return nil, err
	}
	if size < 2*int64(sectorSize) {
		return nil, fmt.Errorf("%w: %d bytes is too small to hold one", ErrNoTable, size)
	}
	f := &file{r: r, size: size}
	seen, err := checkGPTHeaders(r, size, sectorSize)
	if err != nil {
		return nil, err
	}
	var gptErr error
	if seen {
		gt, err := gpt.Read(f, sectorSize, sectorSize)
		if err == nil {
			return fromGPT(gt, size), nil
		}
		gptErr = err
	}
	mt, err := mbr.Read(f, sectorSize, sectorSize)
	if err != nil {
		if gptErr != nil {
			return nil, fmt.Errorf("%w: GPT unreadable (%v) and no MBR (%v)", ErrNoTable, gptErr, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrNoTable, err)
	}
	for _, p := range mt.Partitions {
		if p.Type == mbr.GPTProtective {
			if gptErr == nil {
				gptErr = errors.New("no valid GPT header in the first or last sector")
			}
			return nil, fmt.Errorf("%w: a protective MBR announces a GPT, but the GPT is damaged (%v): recreate the table", ErrNoTable, gptErr)
		}
	}
	return fromMBR(mt, size, sectorSize), nil
}

// checkGPTHeaders looks at the two places go-diskfs reads a GPT header
// from (LBA 1 and the disk's last LBA). It reports whether either holds a
// header go-diskfs would accept, and refuses one whose entry array is not
// 128-byte entries of a sane count inside the disk: go-diskfs would
// allocate whatever the header claims, and loop forever on an entry size
// of 0.
func checkGPTHeaders(r io.ReaderAt, size int64, ss int) (seen bool, err error) {
	sectors := uint64(size) / uint64(ss)
	b := make([]byte, ss)
	for _, lba := range []uint64{1, sectors - 1} {
		if n, _ := r.ReadAt(b, int64(lba)*int64(ss)); n != len(b) {
			continue
		}
		if !gptHeaderValid(b) {
			continue
		}
		seen = true
		entrySize := binary.LittleEndian.Uint32(b[84:88])
		count := binary.LittleEndian.Uint32(b[80:84])
		first := binary.LittleEndian.Uint64(b[72:80])
		switch {
		case entrySize != gptEntrySize:
			return true, fmt.Errorf("%w: GPT header at LBA %d has %d-byte entries; only %d-byte entries are supported", ErrNoTable, lba, entrySize, gptEntrySize)
		case count == 0 || count > gptMaxEntries:
			return true, fmt.Errorf("%w: GPT header at LBA %d claims %d entries (at most %d supported): the header is damaged", ErrNoTable, lba, count, gptMaxEntries)
		case first >= sectors || (sectors-first)*uint64(ss) < uint64(count)*gptEntrySize:
			return true, fmt.Errorf("%w: GPT header at LBA %d puts its entries at LBA %d, outside the %d-sector disk", ErrNoTable, lba, first, sectors)
		}
	}
	return seen, nil
}

// gptHeaderValid repeats go-diskfs' checks of a header (signature, revision
// 1.0, 92-byte size, reserved zeroes, CRC32), so that we know which header
// it will use.
func gptHeaderValid(b []byte) bool {
	if len(b) < 92 || string(b[0:8]) != "EFI PART" ||
		!bytes.Equal(b[8:12], []byte{0, 0, 1, 0}) ||
		binary.LittleEndian.Uint32(b[12:16]) != 92 ||
		binary.LittleEndian.Uint32(b[20:24]) != 0 {
		return false
	}
	h := make([]byte, 92)
	copy(h, b)
	want := binary.LittleEndian.Uint32(h[16:20])
	clear(h[16:20])
	return crc32.ChecksumIEEE(h) == want
}

func fromGPT(gt *gpt.Table, size int64) *Table {
	ss := int64(gt.LogicalSectorSize)
	sectors := uint64(size / ss)
	t := &Table{Kind: "gpt", GUID: strings.ToUpper(gt.GUID), SectorSize: int(ss), Recovered: gt.RecoveredFromBackup}
	for _, p := range gt.Partitions {
		if p.Start < 1 || p.End < p.Start || p.End >= sectors {
			continue
		}
		t.Partitions = append(t.Partitions, Partition{
			Number: p.Index,
			Start:  int64(p.Start) * ss,
			Size:   int64(p.End-p.Start+1) * ss,
			Type:   strings.ToUpper(string(p.Type)),
			Label:  p.Name,
			GUID:   strings.ToUpper(p.GUID),
		})
	}
	return t
}

// fromMBR converts the four primary entries. go-diskfs counts MBR LBAs in
// 512-byte sectors whatever the disk's, so the raw values are scaled here:
// on a 4Kn disk MBR LBAs count 4096-byte sectors.
func fromMBR(mt *mbr.Table, size int64, ss int) *Table {
	t := &Table{Kind: "mbr", GUID: mt.UUID(), SectorSize: ss}
	for _, p := range mt.Partitions {
		start, n := int64(p.Start)*int64(ss), int64(p.Size)*int64(ss)
		if p.Type == mbr.Empty || p.Size == 0 || p.Start == 0 || start+n > size {
			continue
		}
		t.Partitions = append(t.Partitions, Partition{
			Number: p.Index,
			Start:  start,
			Size:   n,
			Type:   fmt.Sprintf("0x%02x", byte(p.Type)),
			GUID:   fmt.Sprintf("%s-%02x", t.GUID, p.Index), // the PARTUUID blkid shows
		})
	}
	return t
}

// Need returns the smallest disk, in bytes, that holds the image: the end
// of its last partition plus the backup GPT when its layout has a table;
// otherwise the whole-disk image's length or, for partition images
// without a table, the sum of their partitions (a lower bound: the disk's
// own partitions must hold them). A sectorSize of 0 means 512.
func Need(im *imager.Image, sectorSize int) (int64, error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	if im.Layout.Table != "" {
		_, need, _, err := plan(im.Layout, sectorSize)
		return need, err
	}
	var sum int64
	for _, f := range im.Files {
		sum += partNeed(f)
	}
	return sum, nil
}

// partNeed is the bytes a partition must hold for one image file: the
// partition size recorded in the layout, at least the file's length.
func partNeed(f imager.File) int64 { return max(f.Length, f.Part.Size) }

// PlanTable lays out the partition table an image's layout asks for on a
// disk of size bytes: exact starts where the layout has them, 1 MiB-aligned
// starts in number order where it does not, sizes rounded up to whole
// sectors, types (default Linux filesystem), names and GUIDs as given.
// A layout that cannot be made is an error wrapping [ErrLayout]; a disk
// that is too small one wrapping [ErrTooSmall].
func PlanTable(layout imager.Layout, size int64, sectorSize int) (*Table, error) {
	parts, need, sig, err := plan(layout, sectorSize)
	if err != nil {
		return nil, err
	}
	if size/int64(sectorSize)*int64(sectorSize) < need {
		return nil, fmt.Errorf("%w: a disk of %s is smaller than the %s this %s layout needs: pick a larger disk or a smaller image",
			ErrTooSmall, bytesize.Format(size), bytesize.Format(need), layout.Table)
	}
	return &Table{Kind: layout.Table, GUID: sig, SectorSize: sectorSize, Partitions: parts}, nil
}

// plan does PlanTable's work without a disk: the partitions, the disk size
// they need and, for an MBR whose layout carries PARTUUIDs, the disk
// signature.
func plan(layout imager.Layout, ss int) (parts []Partition, need int64, sig string, err error) {
	if err := checkSectorSize(ss); err != nil {
		return nil, 0, "", err
	}
	bad := func(format string, args ...any) ([]Partition, int64, string, error) {
		return nil, 0, "", fmt.Errorf("%w: %s", ErrLayout, fmt.Sprintf(format, args...))
	}
	isGPT := layout.Table == "gpt"
	if !isGPT && layout.Table != "mbr" {
		return bad("the image has no partition table to create (table %q): write it to a disk or partition as it is", layout.Table)
	}
	if len(layout.Parts) == 0 {
		return bad("the layout has no partitions")
	}
	ss64 := int64(ss)
	first := ss64 // an MBR's partitions start after LBA 0
	if isGPT {
		first = 2*ss64 + gptArrayBytes // protective MBR, header, entry array
	}
	order := make([]int, len(layout.Parts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return layout.Parts[a].Number - layout.Parts[b].Number })
	prevEnd := first
	seenNum := map[int]bool{}
	seenGUID := map[string]int{}
	for _, i := range order {
		p := layout.Parts[i]
		switch {
		case p.Number < 1:
			return bad("part %d is a whole-disk image (number 0) but the layout asks for a %s table", i, layout.Table)
		case !isGPT && p.Number > 4:
			return bad("MBR partition %d: only primary partitions 1-4 can be created; take the image from a GPT disk", p.Number)
		case p.Number > 128:
			return bad("GPT partition %d: the table holds entries 1-128", p.Number)
		case seenNum[p.Number]:
			return bad("partition %d appears twice", p.Number)
		case p.Size <= 0 || p.Size > 1<<60:
			return bad("partition %d has size %d", p.Number, p.Size)
		}
		seenNum[p.Number] = true
		n := (p.Size + ss64 - 1) / ss64 * ss64
		start := p.Start
		if start == 0 {
			start = (prevEnd + Align - 1) / Align * Align
		} else if start%ss64 != 0 {
			return bad("partition %d starts at byte %d, not on a %d-byte sector of this disk", p.Number, start, ss)
		}
		if start < first {
			return bad("partition %d starts at byte %d, inside the %s table (the first usable byte is %d)", p.Number, start, layout.Table, first)
		}
		if start > 1<<61 {
			return bad("partition %d starts at byte %d, past any disk", p.Number, start)
		}
		out := Partition{Number: p.Number, Start: start, Size: n}
		if isGPT {
			if out.Type, err = gptType(p.Type); err != nil {
				return bad("partition %d: %v", p.Number, err)
			}
			if len(utf16.Encode([]rune(p.Label))) > 36 {
				return bad("partition %d: GPT name %q is longer than 36 UTF-16 code units", p.Number, p.Label)
			}
			out.Label = p.Label
			if p.GUID != "" {
				u, err := uuid.Parse(p.GUID)
				if err != nil || u == uuid.Nil {
					return bad("partition %d: GUID %q is not a GUID", p.Number, p.GUID)
				}
				out.GUID = strings.ToUpper(u.String())
				if other, dup := seenGUID[out.GUID]; dup {
					return bad("partitions %d and %d have the same GUID %s", other, p.Number, out.GUID)
				}
				seenGUID[out.GUID] = p.Number
			}
		} else {
			b, err := mbrType(p.Type)
			if err != nil {
				return bad("partition %d: %v", p.Number, err)
			}
			out.Type = fmt.Sprintf("0x%02x", b)
			if p.GUID != "" {
				s, num, ok := strings.Cut(strings.ToLower(p.GUID), "-")
				v, err := strconv.ParseUint(num, 16, 8)
				if _, herr := hex.DecodeString(s); !ok || len(s) != 8 || herr != nil || err != nil || int(v) != p.Number {
					return bad("partition %d: MBR PARTUUID %q: want the disk signature and the number, such as 1a2b3c4d-%02x", p.Number, p.GUID, p.Number)
				}
				if sig != "" && sig != s {
					return bad("partitions disagree on the disk signature (%s, %s)", sig, s)
				}
				sig = s
				out.GUID = s + "-" + num
			}
			if start/ss64 > 0xffffffff || n/ss64 > 0xffffffff || (start+n)/ss64 > 0xffffffff {
				return bad("partition %d ends past the 2^32 sectors an MBR can address: take the image from a GPT disk", p.Number)
			}
		}
		parts = append(parts, out)
		prevEnd = max(prevEnd, start+n)
	}
	byStart := slices.Clone(parts)
	slices.SortFunc(byStart, func(a, b Partition) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	for i := 1; i < len(byStart); i++ {
		if a, b := byStart[i-1], byStart[i]; a.Start+a.Size > b.Start {
			return bad("partitions %d (bytes %d-%d) and %d (from %d) overlap", a.Number, a.Start, a.Start+a.Size, b.Number, b.Start)
		}
	}
	need = prevEnd
	if isGPT {
		need += gptArrayBytes + ss64 // backup entry array and header
	}
	return parts, need, sig, nil
}

// parseTypeByte reads an MBR type byte written in hex: "0x83", "83", "ef".
func parseTypeByte(s string) (byte, bool) {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 8)
	return byte(v), err == nil
}

func gptType(s string) (string, error) {
	if s == "" {
		return defaultGPTType, nil
	}
	if u, err := uuid.Parse(s); err == nil && u != uuid.Nil {
		return strings.ToUpper(u.String()), nil
	}
	if b, ok := parseTypeByte(s); ok {
		if t, ok := mbrToGPT[b]; ok {
			return string(t), nil
		}
	}
	return "", fmt.Errorf("type %q is not a GPT type GUID (nor an MBR type with a GPT equivalent)", s)
}

func mbrType(s string) (byte, error) {
	if s == "" {
		return defaultMBRType, nil
	}
	if b, ok := parseTypeByte(s); ok {
		if b == 0 || b == byte(mbr.GPTProtective) {
			return 0, fmt.Errorf("type 0x%02x cannot be created", b)
		}
		return b, nil
	}
	if u, err := uuid.Parse(s); err == nil {
		if b, ok := gptToMBR[gpt.Type(strings.ToUpper(u.String()))]; ok {
			return b, nil
		}
	}
	return 0, fmt.Errorf("type %q is not an MBR type byte in hex (nor a GPT type with an MBR equivalent)", s)
}

// WriteTable writes a planned table to a disk of size bytes, then reads it
// back and checks that it says what was planned. It also zeroes the gap
// between the table and the first partition (at most the first MiB), so
// that no stale GPT header, boot loader or filesystem signature there
// confuses the kernel or blkid, and on an MBR disk the last sectors where
// an old backup GPT lived, when no partition reaches them. It fills in the
// GUIDs it made up. It does not ask the kernel to re-read the table: see
// [Config.CreateTable].
func WriteTable(rw imager.ReadWriterAt, size int64, t *Table) error {
	if err := checkSectorSize(t.SectorSize); err != nil {
		return err
	}
	ss := int64(t.SectorSize)
	sectors := size / ss
	f := &file{r: rw, w: rw, size: size}
	limit := sectors * ss // end of the last usable byte
	if t.Kind == "gpt" {
		limit -= gptArrayBytes + ss
	}
	for _, p := range t.Partitions {
		if p.Start <= 0 || p.Size <= 0 || p.Start%ss != 0 || p.Size%ss != 0 {
			return fmt.Errorf("%w: partition %d (bytes %d+%d) is not whole %d-byte sectors", ErrLayout, p.Number, p.Start, p.Size, ss)
		}
		if p.Start+p.Size > limit {
			return fmt.Errorf("%w: partition %d ends at byte %d, past the %s usable on a disk of %s",
				ErrTooSmall, p.Number, p.Start+p.Size, bytesize.Format(limit), bytesize.Format(size))
		}
	}
	if err := wipeGap(f, t); err != nil {
		return err
	}
	switch t.Kind {
	case "gpt":
		gt := &gpt.Table{LogicalSectorSize: t.SectorSize, PhysicalSectorSize: t.SectorSize, ProtectiveMBR: true, GUID: t.GUID}
		for _, p := range t.Partitions {
			gt.Partitions = append(gt.Partitions, &gpt.Partition{
				Index: p.Number,
				Start: uint64(p.Start / ss),
				End:   uint64((p.Start+p.Size)/ss - 1),
				Size:  uint64(p.Size),
				Type:  gpt.Type(p.Type),
				Name:  p.Label,
				GUID:  p.GUID,
			})
		}
		if err := gt.Write(f, size); err != nil {
			return fmt.Errorf("write GPT: %w", err)
		}
		// go-diskfs writes the protective MBR entry with zero CHS fields and
		// a size truncated to 32 bits. UEFI 2.10 §5.2.3 wants starting CHS
		// 0x000200, ending CHS 0xFFFFFF and a size of 0xFFFFFFFF when the
		// disk has more sectors than that; some firmware checks.
		pmbr := []byte{0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(pmbr[12:], uint32(min(sectors-1, 0xffffffff)))
		if _, err := f.WriteAt(pmbr, 446); err != nil {
			return fmt.Errorf("write protective MBR: %w", err)
		}
		t.GUID = strings.ToUpper(gt.GUID)
		for i, p := range gt.Partitions {
			t.Partitions[i].GUID = strings.ToUpper(p.GUID)
		}
	case "mbr":
		mt := &mbr.Table{LogicalSectorSize: t.SectorSize, PhysicalSectorSize: t.SectorSize}
		for n := 1; n <= 4; n++ {
			mp := &mbr.Partition{Index: n, Type: mbr.Empty}
			for _, p := range t.Partitions {
				if p.Number == n {
					b, _ := parseTypeByte(p.Type)
					mp.Type, mp.Start, mp.Size = mbr.Type(b), uint32(p.Start/ss), uint32(p.Size/ss)
				}
			}
			mt.Partitions = append(mt.Partitions, mp)
		}
		if err := mt.Write(f, size); err != nil {
			return fmt.Errorf("write MBR: %w", err)
		}
		sig := make([]byte, 4)
		if t.GUID != "" {
			b, err := hex.DecodeString(t.GUID)
			if err != nil || len(b) != 4 {
				return fmt.Errorf("%w: MBR disk signature %q: want 8 hex digits", ErrLayout, t.GUID)
			}
			binary.LittleEndian.PutUint32(sig, binary.BigEndian.Uint32(b))
		} else if _, err := f.ReadAt(sig, 440); err != nil {
			return fmt.Errorf("read MBR disk signature: %w", err)
		}
		// A zero signature is "none": Windows and blkid need one to tell
		// disks (and PARTUUIDs) apart.
		for binary.LittleEndian.Uint32(sig) == 0 {
			rand.Read(sig)
		}
		if _, err := f.WriteAt(sig, 440); err != nil {
			return fmt.Errorf("write MBR disk signature: %w", err)
		}
		t.GUID = fmt.Sprintf("%08x", binary.LittleEndian.Uint32(sig))
		for i := range t.Partitions {
			t.Partitions[i].GUID = fmt.Sprintf("%s-%02x", t.GUID, t.Partitions[i].Number)
		}
	default:
		return fmt.Errorf("%w: table kind %q: want gpt or mbr", ErrLayout, t.Kind)
	}
	if s, ok := rw.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("sync the new table: %w", err)
		}
	}
	got, err := ReadTable(rw, size, t.SectorSize)
	if err != nil {
		return fmt.Errorf("read back the table just written: %w", err)
	}
	if d := diffTables(t, got); d != "" {
		return fmt.Errorf("the table read back differs from the one written (%s): the disk may be failing", d)
	}
	return nil
}

// wipeGap zeroes what a new table leaves behind: the sectors between the
// table and the first partition (up to 1 MiB), and for an MBR the backup
// GPT area at the end of the disk, unless a partition covers it.
func wipeGap(f *file, t *Table) error {
	ss := int64(t.SectorSize)
	from := ss
	if t.Kind == "gpt" {
		from = 2*ss + gptArrayBytes
	}
	to := int64(Align)
	var end int64
	for _, p := range t.Partitions {
		to = min(to, p.Start)
		end = max(end, p.Start+p.Size)
	}
	zero := func(off, n int64) error {
		if n <= 0 {
			return nil
		}
		if _, err := f.WriteAt(make([]byte, n), off); err != nil {
			return fmt.Errorf("clear old signatures at byte %d: %w", off, err)
		}
		return nil
	}
	if err := zero(from, to-from); err != nil {
		return err
	}
	if t.Kind == "mbr" {
		tail := f.size/ss*ss - (gptArrayBytes + ss)
		return zero(max(tail, end), f.size/ss*ss-max(tail, end))
	}
	return nil
}

// diffTables names the first difference between a planned and a read-back
// table, or returns "".
func diffTables(want, got *Table) string {
	if want.Kind != got.Kind || !strings.EqualFold(want.GUID, got.GUID) {
		return fmt.Sprintf("table %s %s, read %s %s", want.Kind, want.GUID, got.Kind, got.GUID)
	}
	if len(want.Partitions) != len(got.Partitions) {
		return fmt.Sprintf("%d partitions, read %d", len(want.Partitions), len(got.Partitions))
	}
	for i, w := range want.Partitions {
		g := got.Partitions[i]
		if w.Number != g.Number || w.Start != g.Start || w.Size != g.Size || !strings.EqualFold(w.Type, g.Type) ||
			w.Label != g.Label || !strings.EqualFold(w.GUID, g.GUID) {
			return fmt.Sprintf("partition %d: wrote %+v, read %+v", w.Number, w, g)
		}
	}
	return ""
}
