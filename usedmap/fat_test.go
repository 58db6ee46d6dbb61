package usedmap

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// TestFAT makes real FAT12/16/32 filesystems with mkfs.vfat (over random
// bytes), copies files in with mcopy, deletes some with mdel and copies
// more into the holes, and checks the map against fsck.fat's count of
// clusters in use. Then it keeps only the mapped bytes: fsck.fat -n must
// find the copy clean and mcopy must read every file back identical.
func TestFAT(t *testing.T) {
	needs.Tool(t, "mkfs.vfat", "fsck.fat", "mcopy", "mmd", "mdel")
	files := fstest.NewFiles(t, 24, 300<<10)
	for _, tc := range []struct {
		name string
		kind string
		size int64
		args []string
	}{
		{"fat12", FAT12, 6 << 20, []string{"-F", "12"}},
		{"fat16", FAT16, 32 << 20, []string{"-F", "16"}},
		{"fat16-2k-sectors-4", FAT16, 40 << 20, []string{"-F", "16", "-s", "4"}},
		{"fat32", FAT32, 48 << 20, []string{"-F", "32", "-s", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := fstest.MakeFAT(t, fstest.RandomFile(t, tc.name+".img", tc.size, 0), files, tc.args...)
			img := v.Path
			m := detectFile(t, img)
			if m.Kind != tc.kind {
				t.Errorf("Kind = %s, want %s", m.Kind, tc.kind)
			}
			// fsck.fat: "img: 20 files, 1234/8000 clusters", and where the
			// data area starts and how big a cluster is.
			out := fstest.Run(t, "fsck.fat", "-n", "-v", img)
			field := func(re string) int64 {
				s := regexp.MustCompile(re).FindStringSubmatch(out)
				if s == nil {
					t.Fatalf("fsck.fat output has no %s:\n%s", re, out)
				}
				n, _ := strconv.ParseInt(s[1], 10, 64)
				return n
			}
			data := field(`Data area starts at byte (\d+)`)
			cluster := field(`(\d+) bytes per cluster`)
			clusters := field(`(\d+) data clusters`)
			usedClusters := field(`files, (\d+)/\d+ clusters`)
			ours := unitsOf(t, m, data, cluster, clusters)
			if int64(ours.count()) != usedClusters {
				t.Errorf("clusters in use: ours %d, fsck.fat %d", ours.count(), usedClusters)
			}
			if !m.Contains(0, data) {
				t.Errorf("the map leaves out part of the reserved sectors, FATs or root directory (the first %d bytes)", data)
			}
			if m.Contains(data+clusters*cluster, 1) {
				t.Errorf("the map goes past the last cluster")
			}

			v.Check(t, usedOnly(t, img, m))
		})
	}
}
