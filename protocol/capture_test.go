package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func goodManifest() *Manifest {
	return &Manifest{Table: "gpt", DiskSize: 100 << 20, Parts: []CapturePart{
		{Number: 1, Start: 1 << 20, Size: 32 << 20, Filesystem: "fat32", Extents: [][2]int64{{0, 4096}, {8192, 4096}}},
		{Number: 2, Start: 33 << 20, Size: 64 << 20},
	}}
}

func TestManifestCheck(t *testing.T) {
	if err := goodManifest().Check(); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	if got, want := goodManifest().Total(), int64(8192+64<<20); got != want {
		t.Errorf("Total() = %d, want %d", got, want)
	}
	for _, tc := range []struct {
		name string
		edit func(m *Manifest)
		want string
	}{
		{"table", func(m *Manifest) { m.Table = "apm" }, "table"},
		{"no parts", func(m *Manifest) { m.Parts = nil }, "0 parts"},
		{"too many parts", func(m *Manifest) {
			for i := range 130 {
				m.Parts = append(m.Parts, CapturePart{Number: i + 3, Start: 98 << 20, Size: 1})
			}
		}, "parts"},
		{"disk size", func(m *Manifest) { m.DiskSize = 1 << 50 }, "disk_size"},
		{"negative start", func(m *Manifest) { m.Parts[0].Start = -1 }, "do not fit"},
		{"past the disk", func(m *Manifest) { m.Parts[1].Size = 1 << 40 }, "do not fit"},
		{"overflow", func(m *Manifest) { m.Parts[1].Start = 1<<63 - 10; m.Parts[1].Size = 20 }, "do not fit"},
		{"parts overlap", func(m *Manifest) { m.Parts[1].Start = 2 << 20 }, "overlaps"},
		{"repeated number", func(m *Manifest) { m.Parts[1].Number = 1 }, "repeated"},
		{"number 0 with table", func(m *Manifest) { m.Parts[1].Number = 0 }, "whole disk"},
		{"two parts without table", func(m *Manifest) { m.Table = "" }, "without a partition table"},
		{"extents out of order", func(m *Manifest) { m.Parts[0].Extents = [][2]int64{{8192, 10}, {0, 10}} }, "out of order"},
		{"extents overlap", func(m *Manifest) { m.Parts[0].Extents = [][2]int64{{0, 100}, {50, 100}} }, "overlapping"},
		{"empty extent", func(m *Manifest) { m.Parts[0].Extents = [][2]int64{{0, 0}} }, "empty"},
		{"negative extent", func(m *Manifest) { m.Parts[0].Extents = [][2]int64{{-5, 10}} }, "outside"},
		{"extent past the part", func(m *Manifest) { m.Parts[0].Extents = [][2]int64{{32<<20 - 1, 2}} }, "outside"},
		{"extent overflow", func(m *Manifest) { m.Parts[0].Extents = [][2]int64{{4096, 1<<63 - 1}} }, "outside"},
		{"too many extents", func(m *Manifest) {
			m.Parts[0].Extents = nil
			for i := range MaxCaptureExtents + 1 {
				m.Parts[0].Extents = append(m.Parts[0].Extents, [2]int64{int64(2 * i), 1})
			}
		}, "extents"},
		{"raw with extents", func(m *Manifest) { m.Raw = true }, "raw"},
		{"fs without extents", func(m *Manifest) { m.Parts[1].Filesystem = "ext4" }, "without extents"},
		{"bad fs name", func(m *Manifest) { m.Parts[0].Filesystem = "FAT 32" }, "filesystem"},
		{"control in label", func(m *Manifest) { m.Parts[0].Label = "a\nb" }, "printable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := goodManifest()
			tc.edit(m)
			err := m.Check()
			if err == nil || !errors.Is(err, ErrBadManifest) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check() = %v, want an ErrBadManifest saying %q", err, tc.want)
			}
		})
	}
}

func TestParseManifest(t *testing.T) {
	b, _ := json.Marshal(goodManifest())
	m, err := ParseManifest(strings.NewReader(string(b)))
	if err != nil || len(m.Parts) != 2 || len(m.Parts[0].Extents) != 2 {
		t.Fatalf("ParseManifest(good) = %+v, %v", m, err)
	}
	for _, in := range []string{"", "null", `{"table":"gpt","disk_size":1,"parts":[],"x":1}`, string(b) + "{}", `{"parts":[{"number":0,"size":1,"extents":[[0,1,2]]}]}`} {
		if _, err := ParseManifest(strings.NewReader(in)); !errors.Is(err, ErrBadManifest) {
			t.Errorf("ParseManifest(%.40q) = %v, want ErrBadManifest", in, err)
		}
	}
}

// FuzzParseManifest: whatever an uploader sends, ParseManifest never
// panics, and a manifest it accepts holds every rule the server relies
// on when it maps the stream onto staged files.
func FuzzParseManifest(f *testing.F) {
	b, _ := json.Marshal(goodManifest())
	f.Add(b)
	f.Add([]byte(`{"table":"","disk_size":4096,"parts":[{"number":0,"start":0,"size":4096,"fs":"ext4","extents":[[0,1024],[2048,1024]]}]}`))
	f.Add([]byte(`{"table":"mbr","disk_size":10,"raw":true,"parts":[{"number":1,"start":0,"size":10}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(strings.NewReader(string(data)))
		if err != nil {
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("error %v does not wrap ErrBadManifest", err)
			}
			return
		}
		var total int64
		for _, p := range m.Parts {
			if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > m.DiskSize {
				t.Fatalf("accepted part %+v outside the %d-byte disk", p, m.DiskSize)
			}
			var end int64
			for _, e := range p.Extents {
				if e[0] < end || e[1] <= 0 || e[0]+e[1] > p.Size {
					t.Fatalf("accepted extent %v of a %d-byte part", e, p.Size)
				}
				end = e[0] + e[1]
			}
			if p.Length() < 0 || p.Length() > p.Size {
				t.Fatalf("part length %d of a %d-byte part", p.Length(), p.Size)
			}
			total += p.Length()
			if total < 0 || total > MaxCaptureBytes {
				t.Fatalf("stream total %d", total)
			}
		}
		if m.Total() != total {
			t.Fatalf("Total() = %d, want %d", m.Total(), total)
		}
	})
}
