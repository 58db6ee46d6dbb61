package usedmap

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
)

// ext2/3/4 on-disk layout: Documentation/filesystems/ext4/ in the Linux
// tree (superblock, group descriptors, "Block Group Layout") and
// e2fsprogs' lib/ext2fs (ext2fs_super_and_bgd_loc2, ext2fs_bg_has_super,
// read_bitmaps), which dumpe2fs and e2fsck use and which the tests check
// this reader against.

const (
	extSuperOff = 1024
	extMagic    = 0xEF53

	extCompatHasJournal   = 0x4
	extCompatSparseSuper2 = 0x200

	extIncompatRecover    = 0x4
	extIncompatJournalDev = 0x8
	extIncompatMetaBG     = 0x10
	extIncompatExtents    = 0x40
	extIncompat64Bit      = 0x80
	extIncompatFlexBG     = 0x200

	extROCompatSparseSuper  = 0x1
	extROCompatHugeFile     = 0x8
	extROCompatGDTCsum      = 0x10
	extROCompatDirNlink     = 0x20
	extROCompatExtraIsize   = 0x40
	extROCompatBigalloc     = 0x200
	extROCompatMetadataCsum = 0x400

	extBGBlockUninit = 0x2
)

func isExt(head []byte) bool {
	if len(head) < extSuperOff+1024 {
		return false
	}
	sb := head[extSuperOff:]
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	// An external journal device carries the magic but no filesystem.
	return binary.LittleEndian.Uint16(sb[0x38:]) == extMagic && incompat&extIncompatJournalDev == 0
}

// extFS is what the map needs from an ext superblock.
type extFS struct {
	blockSize   int64  // bytes
	ratio       int64  // blocks per cluster (bigalloc), else 1
	blocks      uint64 // s_blocks_count
	firstData   uint64 // s_first_data_block
	bpg, cpg    uint64 // blocks, clusters per group
	ipg         uint64 // inodes per group
	inodeSize   uint64
	groups      uint64
	descSize    int64
	descPerBlk  uint64
	metaBG      bool
	firstMetaBG uint64
	sparse      bool
	sparse2     bool
	backupBGs   [2]uint64
	reservedGDT uint64
	uninitOK    bool // BLOCK_UNINIT is honoured (group descriptor checksums)
	is64        bool
}

func extMap(r io.ReaderAt, size int64) (Map, error) {
	sb := make([]byte, 1024)
	if err := readAt(r, size, sb, extSuperOff); err != nil {
		return Map{}, fmt.Errorf("ext superblock: %w", err)
	}
	le := binary.LittleEndian
	compat, incompat, ro := le.Uint32(sb[0x5C:]), le.Uint32(sb[0x60:]), le.Uint32(sb[0x64:])
	kind := Ext2
	switch {
	case incompat&(extIncompatExtents|extIncompat64Bit|extIncompatFlexBG) != 0,
		ro&(extROCompatHugeFile|extROCompatGDTCsum|extROCompatDirNlink|extROCompatExtraIsize|extROCompatMetadataCsum) != 0:
		kind = Ext4
	case compat&extCompatHasJournal != 0:
		kind = Ext3
	}
	if incompat&extIncompatRecover != 0 {
		return Map{}, fmt.Errorf("%w: its %s journal needs recovery: mount and unmount it once (or run e2fsck -p on it), then try again", ErrDirty, kind)
	}
	logBlock, logCluster := le.Uint32(sb[0x18:]), le.Uint32(sb[0x1C:])
	if logBlock > 6 {
		return Map{}, fmt.Errorf("%w: %s block size 1024<<%d", ErrCorrupt, kind, logBlock)
	}
	fs := extFS{
		blockSize:   1024 << logBlock,
		ratio:       1,
		blocks:      uint64(le.Uint32(sb[0x04:])),
		firstData:   uint64(le.Uint32(sb[0x14:])),
		bpg:         uint64(le.Uint32(sb[0x20:])),
		cpg:         uint64(le.Uint32(sb[0x20:])),
		ipg:         uint64(le.Uint32(sb[0x28:])),
		inodeSize:   128,
		descSize:    32,
		metaBG:      incompat&extIncompatMetaBG != 0,
		firstMetaBG: uint64(le.Uint32(sb[0x104:])),
		sparse:      ro&extROCompatSparseSuper != 0,
		sparse2:     compat&extCompatSparseSuper2 != 0,
		backupBGs:   [2]uint64{uint64(le.Uint32(sb[0x24C:])), uint64(le.Uint32(sb[0x250:]))},
		reservedGDT: uint64(le.Uint16(sb[0xCE:])),
		uninitOK:    ro&(extROCompatGDTCsum|extROCompatMetadataCsum) != 0,
		is64:        incompat&extIncompat64Bit != 0,
	}
	if le.Uint32(sb[0x4C:]) >= 1 { // dynamic revision: variable inode size
		fs.inodeSize = uint64(le.Uint16(sb[0x58:]))
	}
	if ro&extROCompatBigalloc != 0 {
		if logCluster < logBlock || logCluster-logBlock > 16 {
			return Map{}, fmt.Errorf("%w: %s cluster size 1024<<%d with blocks of 1024<<%d", ErrCorrupt, kind, logCluster, logBlock)
		}
		fs.ratio = 1 << (logCluster - logBlock)
		fs.cpg = uint64(le.Uint32(sb[0x24:]))
	}
	if fs.is64 {
		fs.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		fs.descSize = int64(le.Uint16(sb[0xFE:]))
		if fs.descSize < 64 || fs.descSize > fs.blockSize || bits.OnesCount64(uint64(fs.descSize)) != 1 {
			return Map{}, fmt.Errorf("%w: %s group descriptor size %d", ErrCorrupt, kind, fs.descSize)
		}
	}
	fs.descPerBlk = uint64(fs.blockSize / fs.descSize)
	bs := uint64(fs.blockSize)
	switch {
	case fs.cpg < 8 || fs.cpg > 8*bs || fs.cpg%8 != 0:
		return Map{}, fmt.Errorf("%w: %s has %d clusters per group", ErrCorrupt, kind, fs.cpg)
	case ro&extROCompatBigalloc != 0 && fs.bpg != fs.cpg*uint64(fs.ratio):
		return Map{}, fmt.Errorf("%w: %s has %d blocks but %d clusters of %d blocks per group", ErrCorrupt, kind, fs.bpg, fs.cpg, fs.ratio)
	case fs.blocks == 0 || fs.blocks > uint64(size)/bs:
		return Map{}, fmt.Errorf("%w: the %s filesystem claims %d blocks of %d bytes, more than the partition's %d bytes: the image is truncated or the partition too small", ErrCorrupt, kind, fs.blocks, bs, size)
	case fs.firstData >= fs.blocks || fs.firstData > 1:
		return Map{}, fmt.Errorf("%w: %s first data block %d", ErrCorrupt, kind, fs.firstData)
	case fs.inodeSize < 128 || fs.inodeSize > bs || bits.OnesCount64(fs.inodeSize) != 1:
		return Map{}, fmt.Errorf("%w: %s inode size %d", ErrCorrupt, kind, fs.inodeSize)
	case fs.ipg == 0 || fs.ipg > 8*bs:
		return Map{}, fmt.Errorf("%w: %s has %d inodes per group", ErrCorrupt, kind, fs.ipg)
	}
	fs.groups = (fs.blocks - fs.firstData + fs.bpg - 1) / fs.bpg

	b := builder{size: size}
	// The boot area and the primary superblock, whatever the block size.
	b.add(0, 2048)
	b.add(int64(fs.firstData)*fs.blockSize, fs.blockSize)
	desc := make([]byte, fs.blockSize)
	descBlock := ^uint64(0)
	bitmap := make([]byte, fs.cpg/8)
	itableBlocks := (fs.ipg*fs.inodeSize + bs - 1) / bs
	for g := range fs.groups {
		// Superblock backup and descriptor blocks of this group.
		for _, blk := range fs.baseMeta(g) {
			if err := fs.addBlocks(&b, blk[0], blk[1]); err != nil {
				return Map{}, err
			}
		}
		db, err := fs.descBlock(g)
		if err != nil {
			return Map{}, err
		}
		if db != descBlock {
			if db >= fs.blocks {
				return Map{}, fmt.Errorf("%w: %s group %d's descriptor at block %d, past the end (%d blocks)", ErrCorrupt, kind, g, db, fs.blocks)
			}
			if err := readAt(r, size, desc, int64(db)*fs.blockSize); err != nil {
				return Map{}, fmt.Errorf("%s group descriptors: %w", kind, err)
			}
			descBlock = db
		}
		d := desc[int64(g%fs.descPerBlk)*fs.descSize:]
		blockBitmap := uint64(le.Uint32(d[0x0:]))
		inodeBitmap := uint64(le.Uint32(d[0x4:]))
		inodeTable := uint64(le.Uint32(d[0x8:]))
		flags := le.Uint16(d[0x12:])
		if fs.is64 {
			blockBitmap |= uint64(le.Uint32(d[0x20:])) << 32
			inodeBitmap |= uint64(le.Uint32(d[0x24:])) << 32
			inodeTable |= uint64(le.Uint32(d[0x28:])) << 32
		}
		// Bitmaps and inode tables are used wherever they sit (with
		// flex_bg, in another group), initialised or not.
		for _, m := range [][2]uint64{{blockBitmap, 1}, {inodeBitmap, 1}, {inodeTable, itableBlocks}} {
			if m[0] < fs.firstData || m[0] >= fs.blocks || m[1] > fs.blocks-m[0] {
				return Map{}, fmt.Errorf("%w: %s group %d's bitmaps or inode table at block %d, outside the filesystem (%d blocks)", ErrCorrupt, kind, g, m[0], fs.blocks)
			}
			if err := fs.addBlocks(&b, m[0], m[1]); err != nil {
				return Map{}, err
			}
		}
		if flags&extBGBlockUninit != 0 && fs.uninitOK {
			// Nothing allocated beyond the metadata added above.
			continue
		}
		if err := readAt(r, size, bitmap, int64(blockBitmap)*fs.blockSize); err != nil {
			return Map{}, fmt.Errorf("%s group %d's block bitmap: %w", kind, g, err)
		}
		fs.addBitmap(&b, g, bitmap)
	}
	return b.done(kind, fs.blockSize*fs.ratio), nil
}

// addBlocks adds n blocks from blk, widened to whole clusters.
func (fs *extFS) addBlocks(b *builder, blk, n uint64) error {
	if blk >= fs.blocks || n > fs.blocks-blk {
		return fmt.Errorf("%w: ext metadata at blocks %d+%d, past the end (%d blocks)", ErrCorrupt, blk, n, fs.blocks)
	}
	r := uint64(fs.ratio)
	start := blk / r * r
	end := (blk + n + r - 1) / r * r
	b.add(int64(start)*fs.blockSize, int64(end-start)*fs.blockSize)
	return nil
}

// addBitmap adds the clusters group g's block bitmap marks used.
func (fs *extFS) addBitmap(b *builder, g uint64, bitmap []byte) {
	first := g * fs.cpg // first cluster of the group, counted from firstData
	clusters := (fs.blocks - fs.firstData + uint64(fs.ratio) - 1) / uint64(fs.ratio)
	n := min(fs.cpg, clusters-first)
	unit := fs.blockSize * fs.ratio
	base := int64(fs.firstData) * fs.blockSize
	run := int64(-1)
	for i := uint64(0); i < n; i++ {
		if i%8 == 0 && i+8 <= n {
			switch bitmap[i/8] {
			case 0x00:
				if run >= 0 {
					b.add(base+run*unit, (int64(first+i)-run)*unit)
					run = -1
				}
				i += 7
				continue
			case 0xFF:
				if run < 0 {
					run = int64(first + i)
				}
				i += 7
				continue
			}
		}
		if bitmap[i/8]&(1<<(i%8)) != 0 {
			if run < 0 {
				run = int64(first + i)
			}
		} else if run >= 0 {
			b.add(base+run*unit, (int64(first+i)-run)*unit)
			run = -1
		}
	}
	if run >= 0 {
		b.add(base+run*unit, (int64(first+n)-run)*unit)
	}
}

func (fs *extFS) hasSuper(g uint64) bool {
	switch {
	case g == 0:
		return true
	case fs.sparse2:
		return g == fs.backupBGs[0] || g == fs.backupBGs[1]
	case g <= 1 || !fs.sparse:
		return true
	case g%2 == 0:
		return false
	}
	for _, p := range []uint64{3, 5, 7} {
		x := p
		for x < g {
			x *= p
		}
		if x == g {
			return true
		}
	}
	return false
}

func (fs *extFS) groupFirst(g uint64) uint64 { return fs.firstData + g*fs.bpg }

// sbBlock is the block that holds group 0's superblock: block 1 with
// 1 KiB blocks (first data block 1, or 0 with bigalloc), else block 0.
func (fs *extFS) sbBlock() uint64 {
	if fs.firstData == 0 && fs.blockSize == 1024 {
		return 1
	}
	return fs.firstData
}

// baseMeta lists group g's superblock backup and descriptor blocks as
// (first block, count), as ext2fs_super_and_bgd_loc2 places them.
func (fs *extFS) baseMeta(g uint64) [][2]uint64 {
	start := fs.groupFirst(g)
	if g == 0 {
		start = fs.sbBlock()
	}
	has := fs.hasSuper(g)
	var out [][2]uint64
	if has {
		out = append(out, [2]uint64{start, 1})
	}
	descBlocks := (fs.groups + fs.descPerBlk - 1) / fs.descPerBlk
	if !fs.metaBG || g/fs.descPerBlk < fs.firstMetaBG {
		if has {
			old := descBlocks + fs.reservedGDT
			if fs.metaBG {
				old = fs.firstMetaBG
			}
			if old > 0 {
				out = append(out, [2]uint64{start + 1, old})
			}
		}
		return out
	}
	if i := g % fs.descPerBlk; i == 0 || i == 1 || i == fs.descPerBlk-1 {
		off := uint64(0)
		if has {
			off = 1
		}
		out = append(out, [2]uint64{start + off, 1})
	}
	return out
}

// descBlock is the block that holds group g's descriptor (the primary copy).
func (fs *extFS) descBlock(g uint64) (uint64, error) {
	mg := g / fs.descPerBlk
	if !fs.metaBG || mg < fs.firstMetaBG {
		return fs.sbBlock() + 1 + mg, nil
	}
	first := mg * fs.descPerBlk
	blk := fs.groupFirst(first)
	if fs.hasSuper(first) {
		blk++
	}
	return blk, nil
}
