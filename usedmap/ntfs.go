package usedmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"strings"
	"unicode/utf16"
)

// NTFS, read just far enough for the used map: the boot sector, MFT
// records 0 ($MFT), 3 ($Volume), 5 (the root directory, to find
// hiberfil.sys) and 6 ($Bitmap). Layout as documented by the Linux-NTFS
// project ("NTFS Documentation", Richard Russon and Yuval Fledel) and as
// ntfs-3g reads it: multi-sector fixups every 512 bytes, attribute
// records, mapping pairs (runlists), index nodes.

const (
	ntfsAttrList   = 0x20
	ntfsVolumeInfo = 0x70
	ntfsData       = 0x80
	ntfsIndexRoot  = 0x90
	ntfsIndexAlloc = 0xA0
	ntfsEnd        = 0xFFFFFFFF

	ntfsVolumeDirty = 0x0001

	ntfsMaxAttrList = 1 << 20 // bytes of $ATTRIBUTE_LIST we will read
)

func isNTFS(head []byte) bool {
	return len(head) >= 512 && string(head[3:11]) == "NTFS    " && head[510] == 0x55 && head[511] == 0xAA
}

type ntfsRun struct {
	vcn, lcn, n int64 // lcn < 0: sparse
}

type ntfsVol struct {
	r        io.ReaderAt
	size     int64
	bps      int64
	cluster  int64
	sectors  int64
	clusters int64
	recSize  int64
	mft      []ntfsRun
}

// ntfsAttr is one attribute record of an MFT record.
type ntfsAttr struct {
	typ      uint32
	name     string
	resident bool
	value    []byte    // resident
	runs     []ntfsRun // non-resident
	dataSize int64     // non-resident: the attribute's byte length
}

func ntfsMap(r io.ReaderAt, size int64) (Map, error) {
	v := &ntfsVol{r: r, size: size}
	boot := make([]byte, 512)
	if err := readAt(r, size, boot, 0); err != nil {
		return Map{}, fmt.Errorf("NTFS boot sector: %w", err)
	}
	le := binary.LittleEndian
	v.bps = int64(le.Uint16(boot[0x0B:]))
	spc := int64(boot[0x0D])
	if spc > 0x80 { // a negative power of two (clusters above 64 KiB)
		spc = 1 << (256 - spc)
	}
	v.sectors = int64(le.Uint64(boot[0x28:]) & (1<<62 - 1))
	mftLCN := int64(le.Uint64(boot[0x30:]) & (1<<62 - 1))
	switch {
	case v.bps < 256 || v.bps > 4096 || bits.OnesCount64(uint64(v.bps)) != 1:
		return Map{}, fmt.Errorf("%w: NTFS sector size %d", ErrCorrupt, v.bps)
	case spc == 0 || spc > 1<<16 || bits.OnesCount64(uint64(spc)) != 1:
		return Map{}, fmt.Errorf("%w: NTFS sectors per cluster %d", ErrCorrupt, spc)
	case v.sectors == 0 || v.sectors > size/v.bps:
		return Map{}, fmt.Errorf("%w: the NTFS filesystem claims %d sectors of %d bytes, more than the partition's %d bytes: the image is truncated or the partition too small", ErrCorrupt, v.sectors, v.bps, size)
	}
	v.cluster = v.bps * spc
	v.clusters = v.sectors / spc
	v.recSize = ntfsUnit(int8(boot[0x40]), v.cluster)
	if v.recSize < 512 || v.recSize > 1<<16 || mftLCN >= v.clusters {
		return Map{}, fmt.Errorf("%w: NTFS MFT record size %d at cluster %d", ErrCorrupt, v.recSize, mftLCN)
	}
	// Record 0, $MFT, sits at the start of the MFT; its $DATA maps the rest.
	v.mft = []ntfsRun{{vcn: 0, lcn: mftLCN, n: (v.recSize + v.cluster - 1) / v.cluster}}
	base, err := v.record(0)
	if err != nil {
		return Map{}, fmt.Errorf("NTFS $MFT: %w", err)
	}
	for _, a := range base {
		if a.typ == ntfsData && a.name == "" && !a.resident {
			v.mft = a.runs // enough to reach the extension records, if any
			break
		}
	}
	mftData, err := v.data(0, "")
	if err != nil {
		return Map{}, fmt.Errorf("NTFS $MFT: %w", err)
	}
	if mftData.resident || len(mftData.runs) == 0 {
		return Map{}, fmt.Errorf("%w: NTFS $MFT has no data runs", ErrCorrupt)
	}
	v.mft = mftData.runs

	if err := v.checkVolume(); err != nil {
		return Map{}, err
	}
	if err := v.checkHiberfile(); err != nil {
		return Map{}, err
	}

	bm, err := v.data(6, "")
	if err != nil {
		return Map{}, fmt.Errorf("NTFS $Bitmap: %w", err)
	}
	need := (v.clusters + 7) / 8
	if bm.resident || bm.dataSize < need || ntfsMapped(bm.runs)*v.cluster < need {
		return Map{}, fmt.Errorf("%w: NTFS $Bitmap holds %d bytes, %d clusters need %d", ErrCorrupt, bm.dataSize, v.clusters, need)
	}
	b := builder{size: size}
	b.add(0, v.cluster) // the boot sector (also in $Bitmap, as $Boot)
	// The backup boot sector: the sector after the volume, the
	// partition's last.
	b.add(v.sectors*v.bps, v.bps)
	buf := make([]byte, min(need, 1<<20))
	run := int64(-1)
	for off := int64(0); off < need; off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), need-off)]
		if err := v.readRuns(bm.runs, off, p); err != nil {
			return Map{}, fmt.Errorf("NTFS $Bitmap: %w", err)
		}
		for i, x := range p {
			c := (off + int64(i)) * 8
			if x == 0xFF && c+8 <= v.clusters {
				if run < 0 {
					run = c
				}
				continue
			}
			for j := range int64(8) {
				if c+j >= v.clusters {
					break
				}
				if x&(1<<j) != 0 {
					if run < 0 {
						run = c + j
					}
				} else if run >= 0 {
					b.add(run*v.cluster, (c+j-run)*v.cluster)
					run = -1
				}
			}
		}
	}
	if run >= 0 {
		b.add(run*v.cluster, (v.clusters-run)*v.cluster)
	}
	return b.done(NTFS, v.cluster), nil
}

// ntfsMapped counts the clusters runs map (sparse runs excluded).
func ntfsMapped(runs []ntfsRun) int64 {
	var n int64
	for _, r := range runs {
		if r.lcn >= 0 {
			n += r.n
		}
	}
	return n
}

// ntfsUnit decodes a clusters-per-record byte: positive, clusters;
// negative, 2^-n bytes.
func ntfsUnit(x int8, cluster int64) int64 {
	if x < 0 {
		if x < -30 {
			return 0
		}
		return 1 << -int(x)
	}
	return int64(x) * cluster
}

func (v *ntfsVol) checkVolume() error {
	attrs, err := v.record(3)
	if err != nil {
		return fmt.Errorf("NTFS $Volume: %w", err)
	}
	for _, a := range attrs {
		if a.typ != ntfsVolumeInfo {
			continue
		}
		if !a.resident || len(a.value) < 12 {
			return fmt.Errorf("%w: NTFS $VOLUME_INFORMATION", ErrCorrupt)
		}
		if binary.LittleEndian.Uint16(a.value[10:])&ntfsVolumeDirty != 0 {
			return fmt.Errorf("%w: Windows marked this NTFS volume dirty: boot Windows and shut down fully (shutdown /s /f /t 0), or run chkdsk /f on it, then try again", ErrDirty)
		}
		return nil
	}
	return fmt.Errorf("%w: NTFS $Volume has no volume information", ErrCorrupt)
}

// checkHiberfile refuses a volume whose root holds a hiberfil.sys that
// starts with "hibr" or "HIBR": Windows is hibernated (or stopped with
// Fast Startup), and the volume's real state is in that file (ntfs-3g
// refuses to mount it read-write for the same reason).
func (v *ntfsVol) checkHiberfile() error {
	ref, err := v.findRoot("hiberfil.sys")
	if err != nil || ref == 0 {
		return err
	}
	d, err := v.data(int64(ref&(1<<48-1)), "")
	if err != nil {
		return fmt.Errorf("NTFS hiberfil.sys: %w", err)
	}
	head := make([]byte, 4)
	switch {
	case d.resident:
		if len(d.value) < 4 {
			return nil
		}
		copy(head, d.value)
	case d.dataSize < 4:
		return nil
	default:
		if err := v.readRuns(d.runs, 0, head); err != nil {
			return fmt.Errorf("NTFS hiberfil.sys: %w", err)
		}
	}
	if s := string(head); s == "hibr" || s == "HIBR" {
		return fmt.Errorf("%w (hiberfil.sys starts with %q): boot Windows and shut down with Fast Startup off (shutdown /s /f /t 0), then try again", ErrHibernated, s)
	}
	return nil
}

// findRoot looks name up (ASCII, case-insensitive) in the root
// directory's index and returns its file reference, or 0. It walks every
// index node, in use or not, and trusts an entry only if the record it
// names is in use with the same sequence number.
func (v *ntfsVol) findRoot(name string) (uint64, error) {
	attrs, err := v.record(5)
	if err != nil {
		return 0, fmt.Errorf("NTFS root directory: %w", err)
	}
	var refs []uint64
	for _, a := range attrs {
		if a.name != "$I30" {
			continue
		}
		switch a.typ {
		case ntfsIndexRoot:
			if !a.resident || len(a.value) < 0x20 {
				return 0, fmt.Errorf("%w: NTFS root index", ErrCorrupt)
			}
			refs = append(refs, ntfsIndexNode(a.value[0x10:], name)...)
		case ntfsIndexAlloc:
			if a.resident {
				return 0, fmt.Errorf("%w: NTFS root index allocation is resident", ErrCorrupt)
			}
			blockSize := int64(0)
			for _, r := range attrs {
				if r.typ == ntfsIndexRoot && r.name == "$I30" && len(r.value) >= 0x10 {
					blockSize = int64(binary.LittleEndian.Uint32(r.value[8:]))
				}
			}
			if blockSize < 512 || blockSize > 1<<16 || bits.OnesCount64(uint64(blockSize)) != 1 {
				return 0, fmt.Errorf("%w: NTFS index block size %d", ErrCorrupt, blockSize)
			}
			blk := make([]byte, blockSize)
			for off := int64(0); off+blockSize <= a.dataSize; off += blockSize {
				if err := v.readRuns(a.runs, off, blk); err != nil {
					return 0, fmt.Errorf("NTFS root index: %w", err)
				}
				if string(blk[:4]) != "INDX" || ntfsFixup(blk) != nil {
					continue // a free or damaged node
				}
				refs = append(refs, ntfsIndexNode(blk[0x18:], name)...)
			}
		}
	}
	for _, ref := range refs {
		rec, err := v.rawRecord(int64(ref & (1<<48 - 1)))
		if err != nil {
			continue
		}
		le := binary.LittleEndian
		if le.Uint16(rec[0x16:])&1 != 0 && le.Uint16(rec[0x10:]) == uint16(ref>>48) {
			return ref, nil
		}
	}
	return 0, nil
}

// ntfsIndexNode returns the file references of the entries named name in
// an index node (starting at its node header).
func ntfsIndexNode(node []byte, name string) []uint64 {
	if len(node) < 16 {
		return nil
	}
	le := binary.LittleEndian
	start, end := int64(le.Uint32(node[0:])), int64(le.Uint32(node[4:]))
	if end > int64(len(node)) {
		end = int64(len(node))
	}
	var refs []uint64
	for off := start; off+16 <= end; {
		e := node[off:end]
		n := int64(le.Uint16(e[8:]))
		keyLen := int64(le.Uint16(e[10:]))
		flags := le.Uint16(e[12:])
		if flags&2 != 0 || n < 16 || n > int64(len(e)) {
			break
		}
		if keyLen >= 0x42 && 16+keyLen <= n {
			key := e[16 : 16+keyLen]
			chars := int64(key[0x40])
			if 0x42+2*chars <= keyLen {
				u := make([]uint16, chars)
				for i := range u {
					u[i] = le.Uint16(key[0x42+2*i:])
				}
				if strings.EqualFold(string(utf16.Decode(u)), name) {
					refs = append(refs, le.Uint64(e[0:]))
				}
			}
		}
		off += n
	}
	return refs
}

// data returns record rec's $DATA attribute with the given name,
// following an attribute list to extension records.
func (v *ntfsVol) data(rec int64, name string) (ntfsAttr, error) {
	attrs, err := v.record(rec)
	if err != nil {
		return ntfsAttr{}, err
	}
	var out *ntfsAttr
	var list *ntfsAttr
	for i, a := range attrs {
		switch {
		case a.typ == ntfsData && a.name == name && out == nil:
			out = &attrs[i]
		case a.typ == ntfsAttrList:
			list = &attrs[i]
		}
	}
	if out == nil && list == nil {
		return ntfsAttr{}, fmt.Errorf("%w: MFT record %d has no $DATA", ErrCorrupt, rec)
	}
	if list == nil || (out != nil && out.resident) {
		return *out, nil
	}
	// Gather the $DATA pieces the attribute list names in other records.
	raw := list.value
	if !list.resident {
		if list.dataSize > ntfsMaxAttrList {
			return ntfsAttr{}, fmt.Errorf("%w: MFT record %d's attribute list is %d bytes", ErrCorrupt, rec, list.dataSize)
		}
		raw = make([]byte, list.dataSize)
		if err := v.readRuns(list.runs, 0, raw); err != nil {
			return ntfsAttr{}, err
		}
	}
	le := binary.LittleEndian
	var pieces []ntfsAttr
	if out != nil {
		pieces = append(pieces, *out)
	}
	seen := map[int64]bool{rec: true}
	for off := 0; off+0x1A <= len(raw); {
		n := int(le.Uint16(raw[off+4:]))
		if n < 0x1A || off+n > len(raw) {
			return ntfsAttr{}, fmt.Errorf("%w: MFT record %d's attribute list", ErrCorrupt, rec)
		}
		typ := le.Uint32(raw[off:])
		other := int64(le.Uint64(raw[off+0x10:]) & (1<<48 - 1))
		off += n
		if typ != ntfsData || seen[other] {
			continue
		}
		seen[other] = true
		ext, err := v.record(other)
		if err != nil {
			return ntfsAttr{}, err
		}
		for _, a := range ext {
			if a.typ == ntfsData && a.name == name && !a.resident {
				pieces = append(pieces, a)
			}
		}
	}
	if len(pieces) == 0 {
		return ntfsAttr{}, fmt.Errorf("%w: MFT record %d has no $DATA", ErrCorrupt, rec)
	}
	// Pieces in VCN order; the first (VCN 0) carries the size.
	var first *ntfsAttr
	var runs []ntfsRun
	for i := range pieces {
		if len(pieces[i].runs) > 0 && pieces[i].runs[0].vcn == 0 {
			first = &pieces[i]
		}
		runs = append(runs, pieces[i].runs...)
	}
	if first == nil {
		return ntfsAttr{}, fmt.Errorf("%w: MFT record %d's $DATA has no first piece", ErrCorrupt, rec)
	}
	res := *first
	res.runs = runs
	return res, nil
}

// rawRecord reads MFT record rec and applies its fixups.
func (v *ntfsVol) rawRecord(rec int64) ([]byte, error) {
	if rec < 0 || rec > v.size/v.recSize {
		return nil, fmt.Errorf("%w: MFT record %d", ErrCorrupt, rec)
	}
	buf := make([]byte, v.recSize)
	if err := v.readRuns(v.mft, rec*v.recSize, buf); err != nil {
		return nil, fmt.Errorf("MFT record %d: %w", rec, err)
	}
	if string(buf[:4]) != "FILE" {
		return nil, fmt.Errorf("%w: MFT record %d has no FILE signature", ErrCorrupt, rec)
	}
	if err := ntfsFixup(buf); err != nil {
		return nil, fmt.Errorf("MFT record %d: %w", rec, err)
	}
	return buf, nil
}

// record reads MFT record rec and parses its attributes.
func (v *ntfsVol) record(rec int64) ([]ntfsAttr, error) {
	buf, err := v.rawRecord(rec)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if le.Uint16(buf[0x16:])&1 == 0 {
		return nil, fmt.Errorf("%w: MFT record %d is not in use", ErrCorrupt, rec)
	}
	var attrs []ntfsAttr
	off := int(le.Uint16(buf[0x14:]))
	for off+8 <= len(buf) {
		typ := le.Uint32(buf[off:])
		if typ == ntfsEnd {
			return attrs, nil
		}
		n := int(le.Uint32(buf[off+4:]))
		if n < 0x18 || n%8 != 0 || n > len(buf)-off {
			break
		}
		a := buf[off : off+n]
		off += n
		at := ntfsAttr{typ: typ, resident: a[8] == 0}
		nameLen, nameOff := int(a[9]), int(le.Uint16(a[10:]))
		if nameOff+2*nameLen > n {
			return nil, fmt.Errorf("%w: MFT record %d: attribute name", ErrCorrupt, rec)
		}
		u := make([]uint16, nameLen)
		for i := range u {
			u[i] = le.Uint16(a[nameOff+2*i:])
		}
		at.name = string(utf16.Decode(u))
		if at.resident {
			vl, vo := int(le.Uint32(a[0x10:])), int(le.Uint16(a[0x14:]))
			if vo > n || vl > n-vo {
				return nil, fmt.Errorf("%w: MFT record %d: resident value", ErrCorrupt, rec)
			}
			at.value = a[vo : vo+vl]
		} else {
			if n < 0x40 {
				return nil, fmt.Errorf("%w: MFT record %d: short non-resident attribute", ErrCorrupt, rec)
			}
			at.dataSize = int64(le.Uint64(a[0x30:]))
			ro := int(le.Uint16(a[0x20:]))
			if ro > n || at.dataSize < 0 || at.dataSize > v.size {
				return nil, fmt.Errorf("%w: MFT record %d: non-resident attribute", ErrCorrupt, rec)
			}
			at.runs, err = v.runlist(a[ro:], int64(le.Uint64(a[0x10:])))
			if err != nil {
				return nil, fmt.Errorf("MFT record %d: %w", rec, err)
			}
		}
		attrs = append(attrs, at)
	}
	return nil, fmt.Errorf("%w: MFT record %d's attributes run past its end", ErrCorrupt, rec)
}

// runlist decodes mapping pairs starting at vcn.
func (v *ntfsVol) runlist(p []byte, vcn int64) ([]ntfsRun, error) {
	var runs []ntfsRun
	lcn := int64(0)
	if vcn < 0 || vcn > v.clusters {
		return nil, fmt.Errorf("%w: runlist starts at cluster %d", ErrCorrupt, vcn)
	}
	for len(p) > 0 && p[0] != 0 {
		nl, ol := int(p[0]&0xF), int(p[0]>>4)
		if nl == 0 || nl > 8 || ol > 8 || 1+nl+ol > len(p) {
			return nil, fmt.Errorf("%w: runlist header %#x", ErrCorrupt, p[0])
		}
		n := ntfsInt(p[1:1+nl], false)
		if n <= 0 || n > v.clusters-vcn {
			return nil, fmt.Errorf("%w: run of %d clusters", ErrCorrupt, n)
		}
		r := ntfsRun{vcn: vcn, lcn: -1, n: n}
		if ol > 0 {
			lcn += ntfsInt(p[1+nl:1+nl+ol], true)
			if lcn < 0 || lcn >= v.clusters || n > v.clusters-lcn {
				return nil, fmt.Errorf("%w: run at cluster %d+%d, outside the volume (%d clusters)", ErrCorrupt, lcn, n, v.clusters)
			}
			r.lcn = lcn
		}
		runs = append(runs, r)
		vcn += n
		p = p[1+nl+ol:]
	}
	return runs, nil
}

// ntfsInt reads a little-endian integer of 1..8 bytes.
func ntfsInt(p []byte, signed bool) int64 {
	var x uint64
	for i := len(p) - 1; i >= 0; i-- {
		x = x<<8 | uint64(p[i])
	}
	if signed && len(p) < 8 && p[len(p)-1]&0x80 != 0 {
		x |= ^uint64(0) << (8 * len(p))
	}
	return int64(x)
}

// ntfsFixup checks and undoes the update sequence: the last two bytes of
// each 512-byte stride hold the sequence number; the real bytes are in
// the array.
func ntfsFixup(rec []byte) error {
	le := binary.LittleEndian
	off, count := int(le.Uint16(rec[4:])), int(le.Uint16(rec[6:]))
	if count < 2 || (count-1)*512 != len(rec) || off+2*count > len(rec) {
		return fmt.Errorf("%w: update sequence of %d at %d in a %d-byte record", ErrCorrupt, count, off, len(rec))
	}
	usn := rec[off : off+2]
	for i := 1; i < count; i++ {
		end := i * 512
		if !bytes.Equal(rec[end-2:end], usn) {
			return fmt.Errorf("%w: torn record (update sequence mismatch in sector %d)", ErrCorrupt, i)
		}
		copy(rec[end-2:end], rec[off+2*i:off+2*i+2])
	}
	return nil
}

// readRuns reads len(p) bytes at byte offset off of a non-resident
// attribute; sparse runs and bytes past the last run read as zeros.
func (v *ntfsVol) readRuns(runs []ntfsRun, off int64, p []byte) error {
	clear(p)
	for _, r := range runs {
		start, end := r.vcn*v.cluster, (r.vcn+r.n)*v.cluster
		if end <= off || start >= off+int64(len(p)) {
			continue
		}
		lo, hi := max(start, off), min(end, off+int64(len(p)))
		if r.lcn < 0 {
			continue
		}
		if err := readAt(v.r, v.size, p[lo-off:hi-off], r.lcn*v.cluster+(lo-start)); err != nil {
			return err
		}
	}
	return nil
}
