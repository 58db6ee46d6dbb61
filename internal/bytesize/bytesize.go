// Package bytesize reads and prints byte counts in human units (8MiB, 256GB),
// for flags, config files, logs and error messages. It owns nothing else.
package bytesize

import (
	"fmt"
	"strconv"
	"strings"
)

// Format prints a size in binary units: 512B, 8MiB, 238.4GiB.
func Format(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%dB", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		f /= unit
		if f < unit && f > -unit || u == "PiB" {
			if f == float64(int64(f)) {
				return fmt.Sprintf("%d%s", int64(f), u)
			}
			return fmt.Sprintf("%.1f%s", f, u)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// Parse reads a size such as 8MiB, 256GB, 4k or 1048576. Binary
// suffixes (KiB, MiB, GiB, TiB, and the short K, M, G, T) are powers of
// 1024; decimal ones (KB, MB, GB, TB) powers of 1000, as disk vendors use them.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, suf := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[suf]
	if mult == 0 || num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit such as 8MiB, 512KiB or 256GB", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("size %q: want a non-negative number with an optional unit such as 8MiB or 256GB", s)
	}
	return int64(f * mult), nil
}
