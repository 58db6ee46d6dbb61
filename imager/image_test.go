package imager

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// writeRandom writes n pseudo-random bytes (seeded) to a new file.
func writeRandom(t testing.TB, path string, n int64, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 1<<20)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n > 0 {
		for i := 0; i < len(buf); i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < len(buf); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		k := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
}

func makeImage(t testing.TB, dir string, sizes []int64, pieceLen int64) (*Image, []string) {
	t.Helper()
	var srcs []string
	for i, sz := range sizes {
		p := filepath.Join(dir, "part"+string(rune('a'+i))+".img")
		writeRandom(t, p, sz, uint64(i+1))
		srcs = append(srcs, p)
	}
	im, err := Create(context.Background(), testlog.New(t), CreateConfig{
		Name: "test", Sources: srcs, PieceLength: pieceLen, Table: "gpt",
		Trackers: []string{"http://127.0.0.1:1/announce"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return im, srcs
}

func TestCreateHashesMatchSha1(t *testing.T) {
	dir := t.TempDir()
	// Sizes that do not align to pieces, so pieces straddle files.
	im, srcs := makeImage(t, dir, []int64{3<<20 + 12345, 1<<20 + 7, 2 << 20}, 1<<20)
	var all []byte
	for _, s := range srcs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if im.Length != int64(len(all)) {
		t.Fatalf("Length = %d, want %d", im.Length, len(all))
	}
	if got, want := im.NumPieces(), (len(all)+(1<<20)-1)>>20; got != want {
		t.Fatalf("NumPieces() = %d, want %d", got, want)
	}
	for i := 0; i < im.NumPieces(); i++ {
		end := min(len(all), (i+1)<<20)
		if got, want := im.PieceHash(i), sha1.Sum(all[i<<20:end]); got != want {
			t.Errorf("PieceHash(%d) = %x, want %x", i, got, want)
		}
	}
	wantParts := []PartInfo{{Number: 1, Size: 3<<20 + 12345}, {Number: 2, Size: 1<<20 + 7}, {Number: 3, Size: 2 << 20}}
	if diff := cmp.Diff(wantParts, im.Layout.Parts); diff != "" {
		t.Errorf("layout parts (-want +got):\n%s", diff)
	}
	// Round trip through the file format keeps info-hash and layout.
	path := filepath.Join(dir, "x.torrent")
	if err := im.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.InfoHash != im.InfoHash {
		t.Errorf("LoadFile info-hash = %s, want %s", back.InfoHash, im.InfoHash)
	}
	if diff := cmp.Diff(im.Layout, back.Layout); diff != "" {
		t.Errorf("layout after round trip (-want +got):\n%s", diff)
	}
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	for _, tc := range []struct {
		name string
		cfg  CreateConfig
		want string
	}{
		{"missing source", CreateConfig{Sources: []string{filepath.Join(dir, "nope.img")}}, "does not exist"},
		{"no sources", CreateConfig{}, "no sources"},
		{"empty source", CreateConfig{Sources: []string{empty}}, "is empty"},
		{"piece size not power of two", CreateConfig{Sources: []string{empty}, PieceLength: 3 << 20}, "power of two"},
		{"piece size too large", CreateConfig{Sources: []string{empty}, PieceLength: 128 << 20}, "power of two"},
		{"piece size too small", CreateConfig{Sources: []string{empty}, PieceLength: 128 << 10}, "power of two"},
	} {
		_, err := Create(context.Background(), testlog.New(t), tc.cfg)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: Create() error = %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}

func TestPieceLengthFor(t *testing.T) {
	for _, tc := range []struct{ size, want int64 }{
		{1, 256 << 10},
		{64 << 20, 256 << 10},
		{512 << 20, 256 << 10},   // exactly 2048 pieces
		{512<<20 + 1, 512 << 10}, // one byte more would be 2049
		{1 << 30, 512 << 10},
		{4 << 30, 2 << 20},
		{16 << 30, 8 << 20},
		{256e9, 8 << 20}, // capped: 30,518 pieces
		{4 << 40, 8 << 20},
	} {
		if got := PieceLengthFor(tc.size); got != tc.want {
			t.Errorf("PieceLengthFor(%s) = %s, want %s", bytesize.Format(tc.size), bytesize.Format(got), bytesize.Format(tc.want))
		}
		if err := CheckPieceLength(PieceLengthFor(tc.size)); err != nil {
			t.Errorf("PieceLengthFor(%d) is not a valid piece size: %v", tc.size, err)
		}
	}
}

func TestCreateDefaultsPieceLengthBySize(t *testing.T) {
	dir := t.TempDir()
	// 3 MiB over two parts: 256 KiB pieces, 12 of them.
	im, _ := makeImage(t, dir, []int64{2 << 20, 1 << 20}, 0)
	if im.PieceLength != 256<<10 || im.NumPieces() != 12 {
		t.Errorf("Create with no piece size: %s pieces × %d, want 256KiB × 12", bytesize.Format(im.PieceLength), im.NumPieces())
	}
}

func TestParseRejectsBadTorrents(t *testing.T) {
	im, _ := makeImage(t, t.TempDir(), []int64{2<<20 + 1}, 1<<20)
	var good bytes.Buffer
	if err := im.Write(&good); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(*infoDict)) []byte {
		var info infoDict
		if err := bencode.Unmarshal(im.Meta.InfoBytes, &info); err != nil {
			t.Fatal(err)
		}
		f(&info)
		ib, _ := bencode.Marshal(info)
		mi := *im.Meta
		mi.InfoBytes = ib
		b, _ := bencode.Marshal(mi)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("this is not bencode at all")},
		{"truncated", good.Bytes()[:good.Len()/2]},
		{"truncated by one byte", good.Bytes()[:good.Len()-1]},
		{"missing piece hashes", mutate(func(i *infoDict) { i.Pieces = i.Pieces[:20] })},
		{"odd piece length", mutate(func(i *infoDict) { i.PieceLength = 3 << 20 })},
		{"neither files nor a length", mutate(func(i *infoDict) { i.Files, i.Length = nil, 0 })},
		{"single file with a pxeswarm layout", mutate(func(i *infoDict) { i.Length, i.Files = i.Files[0].Length, nil })},
		{"single file of negative length", mutate(func(i *infoDict) { i.Files, i.Layout, i.Length = nil, nil, -5 })},
		{"layout count", mutate(func(i *infoDict) { i.Layout.Parts = append(i.Layout.Parts, i.Layout.Parts[0]) })},
		{"partition smaller than file", mutate(func(i *infoDict) { i.Layout.Parts[0].Size = 10 })},
		{"unknown table", mutate(func(i *infoDict) { i.Layout.Table = "zfs" })},
		{"no name", mutate(func(i *infoDict) { i.Name = "" })},
	} {
		_, err := Parse(tc.data)
		if !errors.Is(err, ErrBadTorrent) {
			t.Errorf("%s: Parse() error = %v, want ErrBadTorrent", tc.name, err)
		}
	}
	if _, err := Parse(good.Bytes()); err != nil {
		t.Errorf("Parse(good) error = %v, want nil", err)
	}
}

// TestMetadataSize256GB measures the torrent size for a 256 GB image at
// the default 8 MiB pieces (the hashes' values do not change the size).
func TestMetadataSize256GB(t *testing.T) {
	const size int64 = 256e9
	n := (size + DefaultPieceLength - 1) / DefaultPieceLength
	info := infoDict{
		Name: "win11", PieceLength: DefaultPieceLength, Pieces: make([]byte, n*20),
		Files:  []fileEntry{{Length: 300 << 20, Path: []string{"p1-esp.img"}}, {Length: size - 300<<20, Path: []string{"p2-windows.img"}}},
		Layout: &Layout{Table: "gpt", Parts: []PartInfo{{Number: 1, Size: 300 << 20}, {Number: 2, Size: size - 300<<20}}},
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bencode.Marshal(struct {
		Announce string        `bencode:"announce"`
		Info     bencode.Bytes `bencode:"info"`
	}{"http://198.18.0.1:8080/announce", ib})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("256 GB at 8 MiB pieces: %d pieces, torrent %d bytes (%s)", n, len(b), bytesize.Format(int64(len(b))))
	if len(b) > 700<<10 {
		t.Errorf("torrent for 256 GB is %s, want at most 700KiB", bytesize.Format(int64(len(b))))
	}
	if _, err := Parse(b); err != nil {
		t.Errorf("Parse(256 GB torrent) = %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	im, _ := makeImage(f, f.TempDir(), []int64{1<<20 + 3, 1 << 20}, 1<<20)
	var good bytes.Buffer
	im.Write(&good)
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:100])
	f.Add([]byte("d4:infod4:name1:x12:piece lengthi1048576e6:pieces0:ee"))
	f.Add([]byte("le"))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrBadTorrent) {
				t.Fatalf("Parse error %v does not wrap ErrBadTorrent", err)
			}
			return
		}
		// Whatever parses must be self-consistent.
		var total int64
		for _, fl := range im.Files {
			if fl.Length <= 0 || fl.Offset != total {
				t.Fatalf("file %+v at offset %d", fl, total)
			}
			total += fl.Length
		}
		if total != im.Length || int64(im.NumPieces()) != (total+im.PieceLength-1)/im.PieceLength {
			t.Fatalf("inconsistent image: length %d pieces %d", im.Length, im.NumPieces())
		}
	})
}
