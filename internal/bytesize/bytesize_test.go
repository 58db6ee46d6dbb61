package bytesize

import "testing"

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {1024, "1KiB"}, {8 << 20, "8MiB"}, {1536, "1.5KiB"},
		{256e9, "238.4GiB"}, {-2048, "-2KiB"}, {1 << 60, "1024PiB"},
	} {
		if got := Format(tc.n); got != tc.want {
			t.Errorf("Format(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want int64
		bad  bool
	}{
		{s: "8MiB", want: 8 << 20}, {s: "256GB", want: 256e9}, {s: "4k", want: 4096}, {s: "1048576", want: 1 << 20},
		{s: " 1.5 KiB ", want: 1536}, {s: "2tb", want: 2e12},
		{s: "", bad: true}, {s: "MiB", bad: true}, {s: "8 parsecs", bad: true}, {s: "-1", bad: true}, {s: "9999999TiB", bad: true},
	} {
		got, err := Parse(tc.s)
		if tc.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %d, want an error", tc.s, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v, want %d", tc.s, got, err, tc.want)
		}
	}
}
