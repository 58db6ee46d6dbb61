package usedmap

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
)

// FAT12/16/32 layout: Microsoft's "FAT: General Overview of On-Disk
// Format" (the BPB fields, and the type decided by the cluster count
// alone: below 4085 FAT12, below 65525 FAT16, else FAT32).

type fatFS struct {
	bps, spc        uint64 // bytes per sector, sectors per cluster
	reserved, nfats uint64
	rootEntries     uint64
	totalSectors    uint64
	fatSectors      uint64
	dataStart       uint64 // first data sector
	clusters        uint64 // data clusters (numbered 2..clusters+1)
	kind            string
	bitsPerEntry    uint64
}

// isFAT checks the BPB: a jump, the boot signature, and sane geometry.
func isFAT(head []byte) bool {
	if len(head) < 512 || (head[0] != 0xEB && head[0] != 0xE9) || head[510] != 0x55 || head[511] != 0xAA {
		return false
	}
	_, err := parseFAT(head)
	return err == nil
}

func parseFAT(bs []byte) (fatFS, error) {
	le := binary.LittleEndian
	fs := fatFS{
		bps:          uint64(le.Uint16(bs[11:])),
		spc:          uint64(bs[13]),
		reserved:     uint64(le.Uint16(bs[14:])),
		nfats:        uint64(bs[16]),
		rootEntries:  uint64(le.Uint16(bs[17:])),
		totalSectors: uint64(le.Uint16(bs[19:])),
		fatSectors:   uint64(le.Uint16(bs[22:])),
	}
	if fs.totalSectors == 0 {
		fs.totalSectors = uint64(le.Uint32(bs[32:]))
	}
	if fs.fatSectors == 0 {
		fs.fatSectors = uint64(le.Uint32(bs[36:]))
	}
	switch {
	case fs.bps < 512 || fs.bps > 4096 || bits.OnesCount64(fs.bps) != 1:
		return fs, fmt.Errorf("%w: FAT sector size %d", ErrCorrupt, fs.bps)
	case fs.spc == 0 || bits.OnesCount64(fs.spc) != 1:
		return fs, fmt.Errorf("%w: FAT sectors per cluster %d", ErrCorrupt, fs.spc)
	case fs.reserved == 0 || fs.nfats == 0 || fs.fatSectors == 0 || fs.totalSectors == 0:
		return fs, fmt.Errorf("%w: FAT geometry (reserved %d, FATs %d of %d sectors, %d sectors)", ErrCorrupt, fs.reserved, fs.nfats, fs.fatSectors, fs.totalSectors)
	}
	rootSectors := (fs.rootEntries*32 + fs.bps - 1) / fs.bps
	fs.dataStart = fs.reserved + fs.nfats*fs.fatSectors + rootSectors
	if fs.dataStart >= fs.totalSectors {
		return fs, fmt.Errorf("%w: FAT metadata (%d sectors) fills the volume (%d sectors)", ErrCorrupt, fs.dataStart, fs.totalSectors)
	}
	fs.clusters = (fs.totalSectors - fs.dataStart) / fs.spc
	switch {
	case fs.clusters < 4085:
		fs.kind, fs.bitsPerEntry = FAT12, 12
	case fs.clusters < 65525:
		fs.kind, fs.bitsPerEntry = FAT16, 16
	default:
		fs.kind, fs.bitsPerEntry = FAT32, 32
		if fs.rootEntries != 0 {
			return fs, fmt.Errorf("%w: FAT32 with a fixed root directory", ErrCorrupt)
		}
	}
	if need := ((fs.clusters+2)*fs.bitsPerEntry + 7) / 8; need > fs.fatSectors*fs.bps {
		return fs, fmt.Errorf("%w: %s with %d clusters needs %d bytes of FAT, it has %d", ErrCorrupt, fs.kind, fs.clusters, need, fs.fatSectors*fs.bps)
	}
	return fs, nil
}

func fatMap(r io.ReaderAt, size int64) (Map, error) {
	bs := make([]byte, 512)
	if err := readAt(r, size, bs, 0); err != nil {
		return Map{}, fmt.Errorf("FAT boot sector: %w", err)
	}
	fs, err := parseFAT(bs)
	if err != nil {
		return Map{}, err
	}
	if fs.totalSectors > uint64(size)/fs.bps {
		return Map{}, fmt.Errorf("%w: the %s filesystem claims %d sectors of %d bytes, more than the partition's %d bytes: the image is truncated or the partition too small", ErrCorrupt, fs.kind, fs.totalSectors, fs.bps, size)
	}
	b := builder{size: size}
	// Reserved sectors (boot sector, FSInfo, backup), the FATs, the root
	// directory.
	b.add(0, int64(fs.dataStart*fs.bps))
	unit := int64(fs.spc * fs.bps)
	data := int64(fs.dataStart * fs.bps)
	// Walk the first FAT in chunks; entries 0 and 1 are reserved.
	const chunk = 1 << 20 // bytes, a multiple of 3 (FAT12 pairs) and 4
	fatBytes := ((fs.clusters+2)*fs.bitsPerEntry + 7) / 8
	buf := make([]byte, min(chunk-chunk%12, fatBytes+2))
	run := int64(-1)
	var c uint64 // cluster number of buf's first entry
	for off := uint64(0); off < fatBytes && c < fs.clusters+2; {
		n := min(uint64(len(buf)), fatBytes-off)
		if err := readAt(r, size, buf[:n], int64(fs.reserved*fs.bps+off)); err != nil {
			return Map{}, fmt.Errorf("%s table: %w", fs.kind, err)
		}
		entries := n * 8 / fs.bitsPerEntry
		if entries == 0 {
			break
		}
		for i := uint64(0); i < entries && c < fs.clusters+2; i, c = i+1, c+1 {
			var v uint32
			switch fs.bitsPerEntry {
			case 12:
				p := i * 3 / 2
				if p+1 >= n {
					v = 0xFFF // the last half-entry of an odd count: treat as used
				} else if i%2 == 0 {
					v = uint32(binary.LittleEndian.Uint16(buf[p:])) & 0xFFF
				} else {
					v = uint32(binary.LittleEndian.Uint16(buf[p:])) >> 4
				}
			case 16:
				v = uint32(binary.LittleEndian.Uint16(buf[i*2:]))
			default:
				v = binary.LittleEndian.Uint32(buf[i*4:]) & 0x0FFFFFFF
			}
			if c < 2 {
				continue
			}
			k := int64(c - 2)
			if v != 0 {
				if run < 0 {
					run = k
				}
			} else if run >= 0 {
				b.add(data+run*unit, (k-run)*unit)
				run = -1
			}
		}
		off += entries * fs.bitsPerEntry / 8
	}
	if run >= 0 {
		b.add(data+run*unit, (int64(fs.clusters)-run)*unit)
	}
	return b.done(fs.kind, unit), nil
}
