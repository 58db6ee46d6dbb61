package pxe

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrBadWeekly wraps every error of ParseWeekly.
var ErrBadWeekly = errors.New("bad weekly rule")

// ErrNoSchedule: no schedule with that ID.
var ErrNoSchedule = errors.New("no such schedule")

// errScheduleMoved: a schedule was deleted or fired by someone else
// between reading it and firing it; the scheduler skips it.
var errScheduleMoved = errors.New("schedule changed since it was read")

// Schedule starts tasks at a set time: once (At) or every week (Weekly),
// for machines (MACs) or a group, with the settings of POST /api/tasks.
// Schedules live in the store's "schedules" bucket and survive restarts;
// see Scheduler for when a schedule fires.
type Schedule struct {
	ID   string `json:"id"` // "s1", "s2", …
	Name string `json:"name,omitempty"`
	// At is a one-time schedule's moment (zero for a weekly one).
	At time.Time `json:"at,omitzero"`
	// Weekly is a weekly rule, as ParseWeekly reads it ("fri 22:00",
	// "mon-fri 18:30", "daily 06:00"), in the scheduler's time zone.
	Weekly string   `json:"weekly,omitempty"`
	MACs   []string `json:"macs,omitempty"`
	Group  string   `json:"group,omitempty"` // its members when it fires
	Image  string   `json:"image"`
	// Wake sends magic packets for the created tasks (with retries).
	Wake bool `json:"wake,omitempty"`
	TaskSettings
	Created time.Time `json:"created"`
	// Next is when it fires next; zero once a one-time schedule fired
	// (or was missed).
	Next time.Time `json:"next,omitzero"`
	// Runs are the last runs, newest last (at most maxScheduleRuns).
	Runs []ScheduleRun `json:"runs,omitempty"`
}

// ScheduleRun is one firing of a schedule.
type ScheduleRun struct {
	Due   time.Time `json:"due"` // when it was due
	Ran   time.Time `json:"ran"` // when the scheduler acted
	Tasks []string  `json:"tasks,omitempty"`
	// Skipped names machines that got no task: "52:54:00:00:00:01: has
	// task t3".
	Skipped []string `json:"skipped,omitempty"`
	// Missed: the server was down (or the clock jumped) for longer than
	// the grace period past Due, so nothing was started.
	Missed bool   `json:"missed,omitempty"`
	Error  string `json:"error,omitempty"`
}

// maxScheduleRuns bounds the runs kept per schedule.
const maxScheduleRuns = 10

// Weekly is a parsed weekly rule: the days it fires on and the wall
// clock time.
type Weekly struct {
	Days         [7]bool // by time.Weekday: Days[time.Sunday] …
	Hour, Minute int
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

func parseDay(s string) (time.Weekday, bool) {
	s = strings.ToLower(s)
	for i, d := range dayNames {
		full := time.Weekday(i).String()
		if s == d || s == strings.ToLower(full) {
			return time.Weekday(i), true
		}
	}
	return 0, false
}

// ParseWeekly reads a weekly rule: days, a space, then the time as
// HH:MM (24-hour). Days are names (mon, tue, … or monday, …, any case),
// comma-separated, and ranges of them (mon-fri; sat-sun; fri-mon wraps
// round the weekend), or "daily". Examples: "fri 22:00", "mon,wed
// 07:15", "mon-fri 18:30", "daily 06:00". It is read from the admin API,
// so it is strict: anything else wraps ErrBadWeekly.
func ParseWeekly(s string) (Weekly, error) {
	var w Weekly
	bad := func(format string, args ...any) (Weekly, error) {
		return Weekly{}, fmt.Errorf("%w: %q: %s; write it like \"fri 22:00\", \"mon-fri 18:30\" or \"daily 06:00\"", ErrBadWeekly, clipRule(s), fmt.Sprintf(format, args...))
	}
	if len(s) > 100 {
		return bad("longer than 100 characters")
	}
	f := strings.Fields(s)
	if len(f) != 2 {
		return bad("want days and a time, separated by a space")
	}
	days, clock := f[0], f[1]
	if strings.EqualFold(days, "daily") {
		w.Days = [7]bool{true, true, true, true, true, true, true}
	} else {
		for part := range strings.SplitSeq(days, ",") {
			from, to, isRange := strings.Cut(part, "-")
			a, ok := parseDay(from)
			if !ok {
				return bad("%q is not a day (mon, tue, wed, thu, fri, sat, sun)", from)
			}
			b := a
			if isRange {
				if b, ok = parseDay(to); !ok {
					return bad("%q is not a day (mon, tue, wed, thu, fri, sat, sun)", to)
				}
			}
			for d := a; ; d = (d + 1) % 7 {
				w.Days[d] = true
				if d == b {
					break
				}
			}
		}
	}
	hh, mm, ok := strings.Cut(clock, ":")
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	if !ok || err1 != nil || err2 != nil || len(hh) < 1 || len(hh) > 2 || len(mm) != 2 || h < 0 || h > 23 || m < 0 || m > 59 {
		return bad("the time %q is not HH:MM from 00:00 to 23:59", clock)
	}
	w.Hour, w.Minute = h, m
	return w, nil
}

func clipRule(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// String writes the rule in ParseWeekly's canonical form: "daily 06:00"
// or the days as names and ranges ("mon-fri 18:30", "sat,mon 07:00").
func (w Weekly) String() string {
	all := true
	for _, d := range w.Days {
		all = all && d
	}
	days := "daily"
	if !all {
		var parts []string
		for d := 1; d <= 7; d++ { // monday first
			if !w.Days[d%7] || (d > 1 && w.Days[(d-1)%7]) {
				continue
			}
			end := d
			for end+1 <= 7 && w.Days[(end+1)%7] {
				end++
			}
			switch {
			case end == d:
				parts = append(parts, dayNames[d%7])
			case end == d+1:
				parts = append(parts, dayNames[d%7], dayNames[end%7])
			default:
				parts = append(parts, dayNames[d%7]+"-"+dayNames[end%7])
			}
		}
		days = strings.Join(parts, ",")
	}
	return fmt.Sprintf("%s %02d:%02d", days, w.Hour, w.Minute)
}

// Next is the first moment after after when the rule fires, in loc. A
// wall time that a daylight-saving change skips fires at the instant
// time.Date maps it to (an hour later); one that happens twice fires
// once.
func (w Weekly) Next(after time.Time, loc *time.Location) time.Time {
	local := after.In(loc)
	y, m, d := local.Date()
	for i := range 8 {
		t := time.Date(y, m, d+i, w.Hour, w.Minute, 0, 0, loc)
		if w.Days[t.Weekday()] && t.After(after) {
			return t
		}
	}
	return time.Time{} // no day set (ParseWeekly never returns that)
}
