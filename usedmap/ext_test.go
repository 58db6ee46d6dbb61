package usedmap

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// TestExt makes real ext2/3/4 filesystems with mke2fs -d (over random
// bytes, so free space is not zero), deletes and rewrites files with
// debugfs so they fragment, and checks the used map against dumpe2fs's
// free block lists, block for block. Then it keeps only the mapped bytes
// of the image: e2fsck -fn must find it clean and every file must read
// back identical.
func TestExt(t *testing.T) {
	needs.Tool(t, "mke2fs", "dumpe2fs", "debugfs", "e2fsck")
	files := fstest.NewFiles(t, 30, 400<<10)
	for _, tc := range []struct {
		name string
		kind string
		size int64
		args []string
	}{
		{"ext2-1k", Ext2, 24 << 20, []string{"-t", "ext2", "-b", "1024"}},
		{"ext3", Ext3, 48 << 20, []string{"-t", "ext3", "-b", "1024", "-g", "2048"}},
		// Debian's default ext4: flex_bg, 64bit, metadata_csum, BLOCK_UNINIT groups.
		{"ext4", Ext4, 96 << 20, []string{"-t", "ext4", "-g", "2048"}},
		{"ext4-noflex-32bit", Ext4, 96 << 20, []string{"-t", "ext4", "-g", "2048", "-O", "^flex_bg,^64bit"}},
		{"ext4-gdt_csum", Ext4, 64 << 20, []string{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum,uninit_bg"}},
		{"ext4-meta_bg", Ext4, 128 << 20, []string{"-t", "ext4", "-g", "256", "-N", "4096", "-O", "meta_bg,^resize_inode"}},
		{"ext4-bigalloc", Ext4, 128 << 20, []string{"-t", "ext4", "-O", "bigalloc", "-C", "16384"}},
		{"ext4-sparse_super2", Ext4, 96 << 20, []string{"-t", "ext4", "-g", "2048", "-O", "sparse_super2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Deletes every fourth file, then writes two new ones into
			// the holes.
			v := fstest.MakeExt(t, fstest.RandomFile(t, tc.name+".img", tc.size, 0), files, tc.args...)
			m := detectFile(t, v.Path)
			if m.Kind != tc.kind {
				t.Errorf("Kind = %s, want %s", m.Kind, tc.kind)
			}
			checkDumpe2fs(t, v.Path, m)
			v.Check(t, usedOnly(t, v.Path, m))
		})
	}
}

// checkDumpe2fs compares the map, block by block, with the free blocks
// dumpe2fs lists for each group.
func checkDumpe2fs(t *testing.T, img string, m Map) {
	t.Helper()
	out := fstest.Run(t, "dumpe2fs", img)
	field := func(name string) int64 {
		re := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)`)
		s := re.FindStringSubmatch(out)
		if s == nil {
			t.Fatalf("dumpe2fs: no %q", name)
		}
		n, _ := strconv.ParseInt(s[1], 10, 64)
		return n
	}
	blocks, first, bs := field("Block count"), field("First block"), field("Block size")
	// With bigalloc, a free range ends at the first block of its last
	// free cluster.
	ratio := int64(1)
	if strings.Contains(out, "\nCluster size:") {
		ratio = field("Cluster size") / bs
	}
	free := make(bitset, blocks)
	for _, line := range regexp.MustCompile(`(?m)^\s+Free blocks: (.*)$`).FindAllStringSubmatch(out, -1) {
		for _, r := range strings.Split(line[1], ", ") {
			if r == "" {
				continue
			}
			lo, hi, ok := strings.Cut(r, "-")
			a, err1 := strconv.ParseInt(lo, 10, 64)
			b := a
			var err2 error
			if ok {
				b, err2 = strconv.ParseInt(hi, 10, 64)
			}
			b += ratio - 1
			if err1 != nil || err2 != nil || a > b || b >= blocks {
				t.Fatalf("dumpe2fs free range %q", r)
			}
			for i := a; i <= b; i++ {
				free[i] = true
			}
		}
	}
	ours := unitsOf(t, m, 0, bs, blocks)
	want := make(bitset, blocks)
	for i := range want {
		want[i] = !free[i] || int64(i) < first
	}
	if d := ours.diff(want); d != "" {
		t.Errorf("used blocks: ours %d, dumpe2fs %d; they differ at blocks%s", ours.count(), want.count(), d)
	}
	if m.Contains(blocks*bs, 1) {
		t.Errorf("the map goes past the filesystem's last block %d", blocks)
	}
}
