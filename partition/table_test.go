package partition_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	. "github.com/pxeswarm/pxeswarm/partition"

	"github.com/google/go-cmp/cmp"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/needs"
)

const (
	MiB = int64(1) << 20
	GiB = int64(1) << 30

	efiType   = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	linuxType = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	msType    = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
	guid1     = "11111111-2222-4333-8444-555555555555"
	guid2     = "66666666-7777-4888-9999-AAAAAAAAAAAA"
)

// sparse makes a sparse file of size bytes.
func sparse(t testing.TB, size int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPlanTable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layout imager.Layout
		size   int64
		ss     int
		want   []Partition
		sig    string
		err    error
	}{
		{
			name: "gpt exact starts, types, names, guids",
			layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{
				{Number: 1, Start: MiB, Size: 100 * MiB, Type: strings.ToLower(efiType), Label: "EFI system", GUID: strings.ToLower(guid1)},
				{Number: 2, Start: 101 * MiB, Size: 300 * MiB, Type: msType, Label: "Windows", GUID: guid2},
			}},
			size: GiB, ss: 512,
			want: []Partition{
				{Number: 1, Start: MiB, Size: 100 * MiB, Type: efiType, Label: "EFI system", GUID: guid1},
				{Number: 2, Start: 101 * MiB, Size: 300 * MiB, Type: msType, Label: "Windows", GUID: guid2},
			},
		},
		{
			name: "gpt without starts: 1 MiB aligned, sizes rounded to sectors, number order",
			layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{
				{Number: 2, Size: 2 * MiB},
				{Number: 1, Size: MiB + 12345},
			}},
			size: 64 * MiB, ss: 512,
			want: []Partition{
				{Number: 1, Start: MiB, Size: MiB + 12800, Type: linuxType},
				{Number: 2, Start: 3 * MiB, Size: 2 * MiB, Type: linuxType},
			},
		},
		{
			name: "gpt mbr type bytes map to GUIDs",
			layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{
				{Number: 1, Size: MiB, Type: "0xef"}, {Number: 3, Size: MiB, Type: "7"},
			}},
			size: 64 * MiB, ss: 512,
			want: []Partition{
				{Number: 1, Start: MiB, Size: MiB, Type: efiType},
				{Number: 3, Start: 2 * MiB, Size: MiB, Type: msType},
			},
		},
		{
			name: "gpt on 4096-byte sectors: exactly the size it needs",
			layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{
				{Number: 1, Start: MiB, Size: 10*MiB - 100},
			}},
			size: 11*MiB + 16384 + 4096, ss: 4096,
			want: []Partition{{Number: 1, Start: MiB, Size: 10 * MiB, Type: linuxType}},
		},
		{
			name: "mbr types and default",
			layout: imager.Layout{Table: "mbr", Parts: []imager.PartInfo{
				{Number: 1, Size: 10 * MiB, Type: "ef"}, {Number: 2, Size: 20 * MiB}, {Number: 4, Size: MiB, Type: linuxType},
			}},
			size: 64 * MiB, ss: 512,
			want: []Partition{
				{Number: 1, Start: MiB, Size: 10 * MiB, Type: "0xef"},
				{Number: 2, Start: 11 * MiB, Size: 20 * MiB, Type: "0x83"},
				{Number: 4, Start: 31 * MiB, Size: MiB, Type: "0x83"},
			},
		},
		{
			name: "mbr keeps PARTUUIDs and so the disk signature",
			layout: imager.Layout{Table: "mbr", Parts: []imager.PartInfo{
				{Number: 1, Start: 2048 * 512, Size: MiB, Type: "0x07", GUID: "1A2B3C4D-01"},
				{Number: 2, Size: MiB, Type: "0x07", GUID: "1a2b3c4d-02"},
			}},
			size: 64 * MiB, ss: 512,
			want: []Partition{
				{Number: 1, Start: MiB, Size: MiB, Type: "0x07", GUID: "1a2b3c4d-01"},
				{Number: 2, Start: 2 * MiB, Size: MiB, Type: "0x07", GUID: "1a2b3c4d-02"},
			},
			sig: "1a2b3c4d",
		},
		{name: "no table", layout: imager.Layout{Parts: []imager.PartInfo{{Number: 1, Size: MiB}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "no parts", layout: imager.Layout{Table: "gpt"}, size: GiB, ss: 512, err: ErrLayout},
		{name: "whole-disk part", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 0, Size: MiB}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "mbr logical", layout: imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 5, Size: MiB}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "repeated number", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB}, {Number: 1, Size: MiB}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "overlap", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Start: MiB, Size: 2 * MiB}, {Number: 2, Start: 2 * MiB, Size: MiB}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "unaligned start", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Start: MiB + 512, Size: MiB}}}, size: GiB, ss: 4096, err: ErrLayout},
		{name: "start inside the gpt", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Start: 33 * 512, Size: MiB}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "name too long", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB, Label: strings.Repeat("x", 37)}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "bad guid", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB, GUID: "not-a-guid"}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "same guid twice", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB, GUID: guid1}, {Number: 2, Size: MiB, GUID: guid1}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "bad gpt type", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB, Type: "0x42"}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "bad mbr type", layout: imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 1, Size: MiB, Type: "0xee"}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "mbr past 2 TiB", layout: imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 1, Size: 3 << 40}}}, size: 4 << 40, ss: 512, err: ErrLayout},
		{name: "mbr PARTUUID of another number", layout: imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 1, Size: MiB, GUID: "1a2b3c4d-02"}}}, size: GiB, ss: 512, err: ErrLayout},
		{name: "one sector short of the backup gpt", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Start: MiB, Size: 10 * MiB}}}, size: 11*MiB + 16384, ss: 512, err: ErrTooSmall},
		{name: "bad sector size", layout: imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB}}}, size: GiB, ss: 520, err: nil},
	} {
		got, err := PlanTable(tc.layout, tc.size, tc.ss)
		if tc.name == "bad sector size" {
			if err == nil {
				t.Errorf("%s: PlanTable(ss=520) = nil error, want one", tc.name)
			}
			continue
		}
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: PlanTable() = %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: PlanTable() = %v", tc.name, err)
			continue
		}
		want := &Table{Kind: tc.layout.Table, SectorSize: tc.ss, GUID: tc.sig, Partitions: tc.want}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s: PlanTable() (-want +got):\n%s", tc.name, d)
		}
	}
}

// TestWriteReadTable writes planned tables to sparse files, reads them
// back with ReadTable, and (512-byte sectors) with sfdisk.
func TestWriteReadTable(t *testing.T) {
	layouts := map[string]imager.Layout{
		"gpt": {Table: "gpt", Parts: []imager.PartInfo{
			{Number: 1, Start: MiB, Size: 32 * MiB, Type: efiType, Label: "EFI", GUID: guid1},
			{Number: 3, Size: 100*MiB + 7, Label: "données", GUID: guid2},
			{Number: 2, Start: 33 * MiB, Size: 16 * MiB, Type: msType},
		}},
		"mbr": {Table: "mbr", Parts: []imager.PartInfo{
			{Number: 1, Size: 32 * MiB, Type: "0xef"},
			{Number: 2, Size: 100 * MiB},
			{Number: 4, Start: 200 * MiB, Size: 8 * MiB, Type: "0x82"},
		}},
	}
	for _, kind := range []string{"gpt", "mbr"} {
		for _, ss := range []int{512, 4096} {
			size := 512*MiB + 3*4096
			f := sparse(t, size)
			plan, err := PlanTable(layouts[kind], size, ss)
			if err != nil {
				t.Fatalf("%s/%d: PlanTable: %v", kind, ss, err)
			}
			if err := WriteTable(f, size, plan); err != nil {
				t.Fatalf("%s/%d: WriteTable: %v", kind, ss, err)
			}
			if plan.GUID == "" || plan.Partitions[1].GUID == "" {
				t.Errorf("%s/%d: WriteTable left GUIDs unset: %+v", kind, ss, plan)
			}
			got, err := ReadTable(f, size, ss)
			if err != nil {
				t.Fatalf("%s/%d: ReadTable: %v", kind, ss, err)
			}
			if d := cmp.Diff(plan, got); d != "" {
				t.Errorf("%s/%d: ReadTable() after WriteTable (-want +got):\n%s", kind, ss, d)
			}
			if ss == 512 {
				checkSfdisk(t, f.Name(), plan)
			}
		}
	}
}

var sfdiskLine = regexp.MustCompile(`^\S*?(\d+) : start=\s*(\d+), size=\s*(\d+), type=([0-9A-Fa-f-]+)(?:, uuid=([0-9A-Fa-f-]+))?(?:, name="([^"]*)")?`)

// checkSfdisk compares `sfdisk --dump` of path with a table.
func checkSfdisk(t *testing.T, path string, want *Table) {
	t.Helper()
	needs.Tool(t, "sfdisk")
	out, err := exec.Command("sfdisk", "--dump", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --dump %s: %v\n%s", path, err, out)
	}
	wantLabel := map[string]string{"gpt": "gpt", "mbr": "dos"}[want.Kind]
	if !strings.Contains(string(out), "label: "+wantLabel+"\n") {
		t.Errorf("sfdisk --dump: no %q label:\n%s", wantLabel, out)
	}
	id := want.GUID
	if want.Kind == "mbr" {
		id = "0x" + id
	}
	if !strings.Contains(strings.ToUpper(string(out)), "LABEL-ID: "+strings.ToUpper(id)+"\n") {
		t.Errorf("sfdisk --dump: label-id is not %s:\n%s", id, out)
	}
	var got []Partition
	for _, line := range strings.Split(string(out), "\n") {
		m := sfdiskLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		num, _ := strconv.Atoi(m[1])
		start, _ := strconv.ParseInt(m[2], 10, 64)
		n, _ := strconv.ParseInt(m[3], 10, 64)
		p := Partition{Number: num, Start: start * 512, Size: n * 512, Type: strings.ToUpper(m[4]), GUID: strings.ToUpper(m[5]), Label: unescapeSfdisk(m[6])}
		if want.Kind == "mbr" {
			v, _ := strconv.ParseUint(m[4], 16, 8)
			p.Type = fmt.Sprintf("0x%02x", v)
			p.GUID = fmt.Sprintf("%s-%02x", want.GUID, num)
		}
		got = append(got, p)
	}
	if d := cmp.Diff(want.Partitions, got); d != "" {
		t.Errorf("sfdisk --dump %s (-want +got):\n%s\n%s", path, d, out)
	}
}

// TestWriteTableClearsStale: a table written over another leaves no trace
// of it (old GPT headers, an ISO 9660 signature), as blkid sees it.
func TestWriteTableClearsStale(t *testing.T) {
	size := 64 * MiB
	f := sparse(t, size)
	gptPlan, err := PlanTable(imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: 8 * MiB, Label: "old"}}}, size, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTable(f, size, gptPlan); err != nil {
		t.Fatal(err)
	}
	// An ISO 9660 primary volume descriptor at 32 KiB, as a hybrid ISO has.
	if _, err := f.WriteAt(append([]byte{1}, "CD001"...), 32768); err != nil {
		t.Fatal(err)
	}
	mbrPlan, err := PlanTable(imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 1, Size: 8 * MiB}}}, size, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTable(f, size, mbrPlan); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTable(f, size, 512)
	if err != nil || got.Kind != "mbr" {
		t.Fatalf("ReadTable() after an MBR over a GPT = %+v, %v; want the MBR", got, err)
	}
	for _, off := range []int64{512, size - 512, 32768} {
		b := make([]byte, 8)
		f.ReadAt(b, off)
		if !bytes.Equal(b, make([]byte, 8)) {
			t.Errorf("byte %d still holds %q after the new table", off, b)
		}
	}
	needs.Tool(t, "blkid")
	out, err := exec.Command("blkid", "-p", "-o", "export", f.Name()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PTTYPE=dos") || strings.Contains(string(out), "iso9660") {
		t.Errorf("blkid -p %s = %v\n%s; want PTTYPE=dos and nothing else", f.Name(), err, out)
	}
}

// TestWriteTableRefusesOutside: a hand-made table that does not fit is
// refused before anything is written.
func TestWriteTableRefusesOutside(t *testing.T) {
	size := 16 * MiB
	f := sparse(t, size)
	for _, tab := range []*Table{
		{Kind: "gpt", SectorSize: 512, Partitions: []Partition{{Number: 1, Start: MiB, Size: 15 * MiB, Type: linuxType}}},
		{Kind: "mbr", SectorSize: 512, Partitions: []Partition{{Number: 1, Start: MiB, Size: 16 * MiB, Type: "0x83"}}},
		{Kind: "gpt", SectorSize: 512, Partitions: []Partition{{Number: 1, Start: MiB + 1, Size: MiB, Type: linuxType}}},
	} {
		err := WriteTable(f, size, tab)
		if err == nil {
			t.Errorf("WriteTable(%+v) = nil, want an error", tab)
		}
		b := make([]byte, 2*MiB)
		f.ReadAt(b, 0)
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatalf("WriteTable(%+v) = %v but wrote to the disk", tab, err)
		}
	}
}

// TestProtectiveMBR: the protective MBR entry is the one UEFI 2.10 §5.2.3
// asks for, with the size capped at 0xFFFFFFFF on a disk larger than 2 TiB.
func TestProtectiveMBR(t *testing.T) {
	for _, size := range []int64{64 * MiB, 3 << 40} {
		f := sparse(t, size)
		plan, err := PlanTable(imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB}}}, size, 512)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteTable(f, size, plan); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 66)
		f.ReadAt(b, 446)
		want := []byte{0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(want[12:], uint32(min(size/512-1, 0xffffffff)))
		if !bytes.Equal(b[:16], want) || !bytes.Equal(b[16:64], make([]byte, 48)) || b[64] != 0x55 || b[65] != 0xaa {
			t.Errorf("size %d: protective MBR = % x, want % x then zeroes and 55 aa", size, b, want)
		}
	}
}

func TestReadTableNone(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"zeroes", make([]byte, MiB)},
		{"tiny", make([]byte, 100)},
		{"mbr signature only", func() []byte { b := make([]byte, 4096); b[510], b[511] = 0x55, 0xaa; b[446] = 0x7f; return b }()},
	} {
		_, err := ReadTable(bytes.NewReader(tc.data), int64(len(tc.data)), 512)
		if !errors.Is(err, ErrNoTable) {
			t.Errorf("%s: ReadTable() = %v, want ErrNoTable", tc.name, err)
		}
	}
}

// gptDisk returns a small disk image holding a GPT.
func gptDisk(t testing.TB, size int64) []byte {
	t.Helper()
	f := sparse(t, size)
	plan, err := PlanTable(imager.Layout{Table: "gpt", Parts: []imager.PartInfo{
		{Number: 1, Start: 34 * 512, Size: 4096, Label: "a", GUID: guid1},
		{Number: 2, Start: 34*512 + 4096, Size: 2048, Label: "b"},
	}}, size, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTable(f, size, plan); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// setHeader rewrites a field of the GPT header at LBA lba and fixes its CRC.
func setHeader(b []byte, lba int, off int, v uint32) {
	h := b[lba*512 : lba*512+92]
	binary.LittleEndian.PutUint32(h[off:], v)
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
}

func TestReadTableDamagedGPT(t *testing.T) {
	disk := gptDisk(t, 64<<10)
	last := len(disk)/512 - 1

	// Primary header broken: the backup is read and says so.
	b := bytes.Clone(disk)
	b[512] ^= 0xff
	got, err := ReadTable(bytes.NewReader(b), int64(len(b)), 512)
	if err != nil || !got.Recovered || len(got.Partitions) != 2 || got.Partitions[0].GUID != guid1 {
		t.Errorf("ReadTable(primary broken) = %+v, %v; want the backup's two partitions, Recovered", got, err)
	}

	// A CRC-valid header that claims 2^31 entries is refused before any
	// allocation; likewise 0-byte entries (go-diskfs would loop forever).
	for _, tc := range []struct {
		lba, off int
		v        uint32
	}{{1, 80, 1 << 31}, {1, 84, 0}, {last, 80, 1 << 31}, {1, 72, 1 << 30}} {
		b := bytes.Clone(disk)
		setHeader(b, tc.lba, tc.off, tc.v)
		if _, err := ReadTable(bytes.NewReader(b), int64(len(b)), 512); !errors.Is(err, ErrNoTable) {
			t.Errorf("ReadTable(header at LBA %d field %d = %d) = %v, want ErrNoTable", tc.lba, tc.off, tc.v, err)
		}
	}

	// A protective MBR with no GPT left behind is not read as an MBR.
	b = bytes.Clone(disk)
	clear(b[512:1024])
	clear(b[last*512:])
	if got, err := ReadTable(bytes.NewReader(b), int64(len(b)), 512); !errors.Is(err, ErrNoTable) {
		t.Errorf("ReadTable(protective MBR, GPT gone) = %+v, %v; want ErrNoTable", got, err)
	}
}

// smallGPT hand-builds a 16-sector disk with a 4-entry GPT (the minimum
// real tools write is 128 entries; the format allows fewer), so that fuzz
// inputs stay small: partition 1 "a" at LBAs 4-7.
func smallGPT() []byte {
	const ss = 512
	b := make([]byte, 16*ss)
	copy(b[446:], []byte{0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 15, 0, 0, 0})
	b[510], b[511] = 0x55, 0xaa
	entries := make([]byte, 4*128)
	copy(entries[0:16], []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}) // Linux filesystem
	copy(entries[16:32], []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	binary.LittleEndian.PutUint64(entries[32:], 4)
	binary.LittleEndian.PutUint64(entries[40:], 7)
	entries[56] = 'a'
	header := func(my, alt, array uint64) []byte {
		h := make([]byte, 92)
		copy(h, "EFI PART")
		copy(h[8:], []byte{0, 0, 1, 0})
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 3)  // first usable
		binary.LittleEndian.PutUint64(h[48:], 13) // last usable
		copy(h[56:], []byte{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9})
		binary.LittleEndian.PutUint64(h[72:], array)
		binary.LittleEndian.PutUint32(h[80:], 4)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
		return h
	}
	copy(b[1*ss:], header(1, 15, 2))
	copy(b[2*ss:], entries)
	copy(b[14*ss:], entries)
	copy(b[15*ss:], header(15, 1, 14))
	return b
}

func TestReadTableSmallGPT(t *testing.T) {
	disk := smallGPT()
	want := &Table{Kind: "gpt", GUID: "09090909-0909-0909-0909-090909090909", SectorSize: 512, Partitions: []Partition{
		{Number: 1, Start: 4 * 512, Size: 4 * 512, Type: linuxType, Label: "a", GUID: "04030201-0605-0807-090A-0B0C0D0E0F10"},
	}}
	got, err := ReadTable(bytes.NewReader(disk), int64(len(disk)), 512)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ReadTable(smallGPT) (-want +got):\n%s", d)
	}
	disk[512+100] ^= 1 // outside the CRC'd 92 bytes: still fine
	disk[512+50] ^= 1  // inside: the backup is read
	got, err = ReadTable(bytes.NewReader(disk), int64(len(disk)), 512)
	want.Recovered = true
	if err != nil || !cmp.Equal(want, got) {
		t.Errorf("ReadTable(smallGPT, primary header damaged) = %+v, %v; want the backup's table", got, err)
	}
}

// FuzzReadTable: no input makes ReadTable panic, hang or allocate wildly,
// and what it accepts lies inside the disk. The seeds are small disks, as
// large inputs make the fuzzer's minimisation crawl.
func FuzzReadTable(f *testing.F) {
	f.Add(smallGPT(), false)
	m := sparse(f, 8192)
	mplan, err := PlanTable(imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 1, Start: 512, Size: 4096, Type: "0x0c"}}}, 8192, 512)
	if err != nil {
		f.Fatal(err)
	}
	if err := WriteTable(m, 8192, mplan); err != nil {
		f.Fatal(err)
	}
	mb, _ := os.ReadFile(m.Name())
	f.Add(mb, false)
	f.Add(make([]byte, 1024), true)
	f.Fuzz(func(t *testing.T, data []byte, big bool) {
		ss := 512
		if big {
			ss = 4096
		}
		tab, err := ReadTable(bytes.NewReader(data), int64(len(data)), ss)
		if err != nil {
			return
		}
		for _, p := range tab.Partitions {
			if p.Number < 1 || p.Start <= 0 || p.Size <= 0 || p.Start+p.Size > int64(len(data)) {
				t.Fatalf("ReadTable accepted partition %+v outside a %d-byte disk", p, len(data))
			}
		}
	})
}

// unescapeSfdisk undoes sfdisk's \xHH escapes of non-ASCII name bytes.
func unescapeSfdisk(s string) string {
	return regexp.MustCompile(`\\x[0-9a-fA-F]{2}`).ReplaceAllStringFunc(s, func(h string) string {
		v, _ := strconv.ParseUint(h[2:], 16, 8)
		return string([]byte{byte(v)})
	})
}
