package main

import (
	"os"
	"regexp"
	"testing"
)

// TestServedPlainlyMatchesTheSeederLog keeps the bench's count of
// plainly served peers tied to the line the seeder really logs: the
// message is read from imager's source, so rewording it there fails here
// instead of silently reporting 0.
func TestServedPlainlyMatchesTheSeederLog(t *testing.T) {
	src, err := os.ReadFile("../imager/schedule.go")
	if err != nil {
		t.Fatalf("reading the seeder's schedule: %v", err)
	}
	msg := regexp.MustCompile(`s\.log\.Info\("(a peer made no progress[^"]*)"`).FindSubmatch(src)
	if msg == nil {
		t.Fatal(`imager/schedule.go logs no "a peer made no progress…" line; update servedPlainly to the seeder's message`)
	}
	line := `time=2026-12-05T19:06:31.725Z level=INFO msg="` + string(msg[1]) + `" image=bench peer=198.18.1.41:6881`
	p := &proc{lines: []string{"seed: seeding 100.0%", line, "other", line}}
	if got := p.count(servedPlainly); got != 2 {
		t.Errorf("count(servedPlainly) over two logged lines = %d, want 2 (the seeder logs %q)", got, msg[1])
	}
}
