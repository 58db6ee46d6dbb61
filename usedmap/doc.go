// Package usedmap owns one question: which byte ranges of a partition a
// filesystem uses. [Detect] reads a partition (any io.ReaderAt: a block
// device, a sparse image file) and returns a [Map]: the filesystem's kind,
// its allocation unit, and the sorted, merged byte extents that hold
// anything the filesystem needs. Everything outside the map can be left
// out of an image, or zeroed, and the filesystem still checks clean and
// reads back the same files.
//
// It knows, reading only metadata (never file data):
//   - ext2/3/4 (ext.go): the block bitmaps found through the group
//     descriptors (32- and 64-bit descriptors, flex_bg, meta_bg,
//     BLOCK_UNINIT groups, bigalloc clusters); superblocks, descriptor
//     tables, bitmaps and inode tables always count as used;
//   - FAT12/16/32 (fat.go): the reserved sectors, the FATs, the root
//     directory and every cluster whose FAT entry is not free;
//   - NTFS (ntfs.go): the $Bitmap file, plus the backup boot sector; it
//     refuses a volume Windows left hibernated (Fast Startup) or dirty
//     ([ErrHibernated], [ErrDirty]) and a BitLocker volume ([ErrBitLocker]),
//     with a message that says what to do;
//   - Linux swap (swap.go): only its header page.
//
// A filesystem it does not know is never guessed at: its map is the whole
// range, with kind [Unknown]. A known filesystem whose metadata does not
// add up (a corrupted or hostile image) is an error, never a guess, a
// panic or an allocation larger than the device calls for.
//
// It does not own what is done with the map: hashing, skipping zeros,
// laying extents out in a torrent (package imager), or which partitions an
// image has (package partition).
package usedmap
