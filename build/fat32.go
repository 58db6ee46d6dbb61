package build

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// This file owns the empty FAT32 filesystem of the stick's and the test
// OS's ESP. go-diskfs (v1.9.4) fills it with files, but its own FAT32
// Create sizes the FAT wrong: it solves
//
//	sectorsPerFat = ceil(4·(total−reserved) / (bytesPerSector·spc + 8))
//
// which leaves out FAT entries 0 and 1 (the "+2" of the FAT spec's
// "FAT entries ≥ clusters + 2"). When 4·(total−reserved) is a multiple of
// 520 (any 64 MiB ESP) the volume has two clusters more than its FAT has
// entries: fsck.fat says "has 129024 clusters but only space for 129022
// FAT entries" and mtools refuses it ("Too few sectors in FAT"), and so
// may a PC's firmware. formatFAT32 lays the volume out as the spec and
// mkfs.fat do; go-diskfs then reads it and adds the files.

// FAT32 layout constants (Microsoft's FAT specification, "fatgen103").
const (
	fatSector       = 512
	fatReserved     = 32 // boot sector, FSInfo, backups at 6 and 7; FAT on a 16 KiB boundary
	fatCount        = 2
	fatRootCluster  = 2
	fatMinClusters  = 65525 // fewer and every reader takes the volume for FAT16
	fatMaxClusters  = 0x0FFFFFF5 - 2
	fatEntryEOC     = 0x0FFFFFFF
	fatEntryBad     = 0x0FFFFFF7
	fatMedia        = 0xF8 // fixed disk
	fatAttrVolumeID = 0x08
)

// errFATSize is returned for a volume FAT32 cannot hold.
var errFATSize = errors.New("size does not fit FAT32")

// fatGeometry is a FAT32 volume's layout in sectors.
type fatGeometry struct {
	Total             uint32 // sectors in the volume
	SectorsPerCluster uint32
	SectorsPerFAT     uint32
	Clusters          uint32 // data clusters, numbered 2..Clusters+1
}

// planFAT32 lays out a FAT32 volume of size bytes: cluster size by
// Microsoft's table (as mkfs.fat), and the smallest FAT that has an entry
// for every cluster plus the two reserved entries 0 and 1.
func planFAT32(size int64) (fatGeometry, error) {
	if size%fatSector != 0 || size/fatSector > 0xFFFFFFFF {
		return fatGeometry{}, fmt.Errorf("%w: %d bytes is not a whole number of 512-byte sectors under 2 TiB", errFATSize, size)
	}
	g := fatGeometry{Total: uint32(size / fatSector)}
	switch {
	case size <= 260<<20:
		g.SectorsPerCluster = 1
	case size <= 8<<30:
		g.SectorsPerCluster = 8
	case size <= 16<<30:
		g.SectorsPerCluster = 16
	case size <= 32<<30:
		g.SectorsPerCluster = 32
	default:
		g.SectorsPerCluster = 64
	}
	if g.Total <= fatReserved {
		return fatGeometry{}, fmt.Errorf("%w: %d bytes leave no room after the reserved sectors: give at least 33 MiB", errFATSize, size)
	}
	// With F sectors per FAT, clusters = ⌊(T−R−2F)/spc⌋ and the FAT has
	// F·512/4 entries, which must be ≥ clusters+2. That holds when
	// F·(512·spc + 8) ≥ 4·(T−R) + 8·spc; take the smallest such F.
	spc := uint64(g.SectorsPerCluster)
	num := 4*uint64(g.Total-fatReserved) + 8*spc
	den := fatSector*spc + 4*fatCount
	g.SectorsPerFAT = uint32((num + den - 1) / den)
	data := int64(g.Total) - fatReserved - fatCount*int64(g.SectorsPerFAT)
	if data <= 0 {
		return fatGeometry{}, fmt.Errorf("%w: %d bytes leave no room for data", errFATSize, size)
	}
	g.Clusters = uint32(data / int64(spc))
	if g.Clusters < fatMinClusters || g.Clusters > fatMaxClusters {
		return fatGeometry{}, fmt.Errorf("%w: %d bytes make %d clusters, FAT32 needs %d to %d: give at least 33 MiB", errFATSize, size, g.Clusters, fatMinClusters, fatMaxClusters)
	}
	return g, nil
}

// formatFAT32 writes an empty FAT32 filesystem of size bytes at byte off
// of w: boot sector and FSInfo (and their backups at sectors 6 and 7),
// both FATs, and a root directory holding the volume label. hidden is the
// partition's first sector on its disk (0 for a bare filesystem image).
// FAT entries past the last cluster are marked bad, so that go-diskfs,
// which allocates up to the FAT's end, never hands out a cluster outside
// the volume.
func formatFAT32(w io.WriterAt, off, size int64, hidden uint32, label string, serial uint32) (fatGeometry, error) {
	g, err := planFAT32(size)
	if err != nil {
		return g, err
	}
	label = strings.ToUpper(label)
	if len(label) > 11 {
		return g, fmt.Errorf("FAT volume label %q is over 11 characters", label)
	}
	label = fmt.Sprintf("%-11s", label)
	le := binary.LittleEndian

	boot := make([]byte, fatSector)
	copy(boot, []byte{0xEB, 0x58, 0x90}) // jmp 0x5A; nop
	copy(boot[3:], "PXESWARM")
	le.PutUint16(boot[11:], fatSector)
	boot[13] = byte(g.SectorsPerCluster)
	le.PutUint16(boot[14:], fatReserved)
	boot[16] = fatCount
	// Root entries, 16-bit total and 16-bit FAT size stay 0 on FAT32.
	boot[21] = fatMedia
	le.PutUint16(boot[24:], 32) // sectors per track, as mkfs.fat on an image file
	le.PutUint16(boot[26:], 64) // heads
	le.PutUint32(boot[28:], hidden)
	le.PutUint32(boot[32:], g.Total)
	le.PutUint32(boot[36:], g.SectorsPerFAT)
	le.PutUint32(boot[44:], fatRootCluster)
	le.PutUint16(boot[48:], 1) // FSInfo sector
	le.PutUint16(boot[50:], 6) // backup boot sector
	boot[64] = 0x80            // drive number
	boot[66] = 0x29            // extended boot signature: the next three fields are set
	le.PutUint32(boot[67:], serial)
	copy(boot[71:], label)
	copy(boot[82:], "FAT32   ")
	copy(boot[0x5A:], []byte{0xF4, 0xEB, 0xFD}) // not bootable: hlt; jmp back
	boot[510], boot[511] = 0x55, 0xAA

	fsinfo := make([]byte, fatSector)
	le.PutUint32(fsinfo[0:], 0x41615252)
	le.PutUint32(fsinfo[484:], 0x61417272)
	// Free count and next free: unknown. go-diskfs writes this sector
	// back as it read it and does not count, so a number here would be
	// wrong after the files are added.
	le.PutUint32(fsinfo[488:], 0xFFFFFFFF)
	le.PutUint32(fsinfo[492:], 0xFFFFFFFF)
	le.PutUint32(fsinfo[508:], 0xAA550000)

	reserved := make([]byte, fatReserved*fatSector)
	copy(reserved[0:], boot)
	copy(reserved[fatSector:], fsinfo)
	copy(reserved[6*fatSector:], boot)
	copy(reserved[7*fatSector:], fsinfo)
	if _, err := w.WriteAt(reserved, off); err != nil {
		return g, fmt.Errorf("write the FAT32 boot sectors: %w", err)
	}

	fat := make([]byte, int64(g.SectorsPerFAT)*fatSector)
	le.PutUint32(fat[0:], 0x0FFFFF00|fatMedia)
	le.PutUint32(fat[4:], fatEntryEOC)
	le.PutUint32(fat[4*fatRootCluster:], fatEntryEOC)
	for c := int(g.Clusters) + 2; c < len(fat)/4; c++ {
		le.PutUint32(fat[4*c:], fatEntryBad)
	}
	for i := range int64(fatCount) {
		if _, err := w.WriteAt(fat, off+fatReserved*fatSector+i*int64(len(fat))); err != nil {
			return g, fmt.Errorf("write FAT %d: %w", i+1, err)
		}
	}

	root := make([]byte, g.SectorsPerCluster*fatSector)
	copy(root, label)
	root[11] = fatAttrVolumeID
	dataStart := off + (fatReserved+fatCount*int64(g.SectorsPerFAT))*fatSector
	if _, err := w.WriteAt(root, dataStart); err != nil {
		return g, fmt.Errorf("write the FAT32 root directory: %w", err)
	}
	return g, nil
}

// finishFAT32 repairs what go-diskfs (v1.9.4) leaves wrong after adding
// files to the volume formatFAT32 made at byte off of f: it points ".."
// of the root's subdirectories at cluster 2 (the root's cluster) where
// the spec and every checker want 0, and it does not count free clusters
// in FSInfo (fsck.fat: "Free cluster summary uninitialized"). It reads
// the first FAT and the root directory and rewrites those entries and
// both FSInfo sectors.
func finishFAT32(f interface {
	io.ReaderAt
	io.WriterAt
}, off int64, g fatGeometry) error {
	le := binary.LittleEndian
	fat := make([]byte, int64(g.SectorsPerFAT)*fatSector)
	if _, err := f.ReadAt(fat, off+fatReserved*fatSector); err != nil {
		return fmt.Errorf("read the FAT: %w", err)
	}
	entry := func(c uint32) uint32 { return le.Uint32(fat[4*c:]) & 0x0FFFFFFF }
	var free uint32
	for c := uint32(2); c < g.Clusters+2; c++ {
		if entry(c) == 0 {
			free++
		}
	}
	fsinfo := make([]byte, fatSector)
	if _, err := f.ReadAt(fsinfo, off+fatSector); err != nil {
		return fmt.Errorf("read FSInfo: %w", err)
	}
	le.PutUint32(fsinfo[488:], free)
	for _, s := range []int64{1, 7} {
		if _, err := f.WriteAt(fsinfo, off+s*fatSector); err != nil {
			return fmt.Errorf("write FSInfo: %w", err)
		}
	}

	clusterBytes := int64(g.SectorsPerCluster) * fatSector
	dataStart := off + (fatReserved+fatCount*int64(g.SectorsPerFAT))*fatSector
	at := func(c uint32) int64 { return dataStart + int64(c-2)*clusterBytes }
	buf := make([]byte, clusterBytes)
	seen := 0
	for c := uint32(fatRootCluster); c >= 2 && c < g.Clusters+2; c = entry(c) {
		if seen++; seen > int(g.Clusters) {
			return errors.New("the root directory's cluster chain loops")
		}
		if _, err := f.ReadAt(buf, at(c)); err != nil {
			return fmt.Errorf("read the root directory: %w", err)
		}
		for e := 0; e+32 <= len(buf); e += 32 {
			d := buf[e : e+32]
			if d[0] == 0 {
				return nil
			}
			if d[0] == 0xE5 || d[11] == 0x0F || d[11]&0x10 == 0 || d[0] == '.' {
				continue
			}
			sub := uint32(le.Uint16(d[20:]))<<16 | uint32(le.Uint16(d[26:]))
			if sub < 2 || sub >= g.Clusters+2 {
				return fmt.Errorf("root directory entry %q points at cluster %d, outside the volume", d[:11], sub)
			}
			dotdot := make([]byte, 32)
			if _, err := f.ReadAt(dotdot, at(sub)+32); err != nil {
				return fmt.Errorf("read directory %q: %w", d[:11], err)
			}
			if string(dotdot[:11]) != "..         " {
				return fmt.Errorf("directory %q has no \"..\" entry second", d[:11])
			}
			if le.Uint16(dotdot[20:]) == 0 && le.Uint16(dotdot[26:]) == 0 {
				continue
			}
			clear(dotdot[20:22])
			clear(dotdot[26:28])
			if _, err := f.WriteAt(dotdot, at(sub)+32); err != nil {
				return fmt.Errorf("write directory %q: %w", d[:11], err)
			}
		}
	}
	return nil
}
