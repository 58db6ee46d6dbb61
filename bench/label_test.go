package main

import "testing"

// TestScenarioLabel: each scenario kind names its report row, with the
// client count and the filesystem image, if any; an unknown kind names
// itself.
func TestScenarioLabel(t *testing.T) {
	for _, tc := range []struct {
		sc   scenario
		want string
	}{
		{scenario{kind: "homogeneous", n: 4}, "homogeneous N=4"},
		{scenario{kind: "slow", n: 8}, "one slow client (R/10), N=8"},
		{scenario{kind: "late", n: 8}, "late joiners (half at 50%), N=8"},
		{scenario{kind: "loss", n: 8}, "one client with 2% loss, N=8"},
		{scenario{kind: "killed", n: 8}, "one client killed halfway, N=8"},
		{scenario{kind: "slowpeers", n: 3}, "slow peers (CPU-limited), N=3"},
		{scenario{kind: "fleet", n: 100}, "fleet, N=100"},
		{scenario{kind: "rooms", n: 16}, "two rooms behind a router, N=16"},
		{scenario{kind: "other", n: 2}, "other"},
		{scenario{kind: "homogeneous", n: 16, fs: "ext4"}, "ext4, homogeneous N=16"},
		{scenario{kind: "slow", n: 4, fs: "ntfs"}, "ntfs, one slow client (R/10), N=4"},
	} {
		if got := tc.sc.label(); got != tc.want {
			t.Errorf("%+v.label() = %q, want %q", tc.sc, got, tc.want)
		}
	}
}
