package pxe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pxeswarm/pxeswarm/pxe/catalog"
)

// DefaultScheduleGrace is how late a schedule may still fire.
const DefaultScheduleGrace = time.Hour

// schedulerMaxSleep bounds the scheduler's sleep, so a wall clock that
// jumps (NTP after a cold start) is noticed within it.
const schedulerMaxSleep = 30 * time.Second

// ScheduleConfig configures the Scheduler.
type ScheduleConfig struct {
	Store   *Store
	Catalog *catalog.Catalog // a schedule's image must be published when it fires
	// Grace is how late a due schedule may still fire: one whose time
	// passed while the server was down fires once at start if it is at
	// most Grace late, and is recorded as missed (nothing started)
	// otherwise. A weekly one then waits for its next day. 0 means
	// DefaultScheduleGrace.
	Grace time.Duration
	// Location is the time zone of weekly rules; nil means time.Local.
	Location *time.Location
	// Wake sends the magic packets of schedules with Wake; nil: such
	// schedules record that Wake-on-LAN is off (their tasks still start).
	Wake *Waker
	// Now is the clock; nil means time.Now. Tests inject one.
	Now func() time.Time
}

// Scheduler fires schedules: at each one's Next time it creates the
// tasks (skipping machines that have an active task) and, for Wake
// schedules, wakes their machines. Each firing is one store transaction
// with its tasks (Store.FireSchedule), so a schedule fires at most once
// per due time, across restarts.
type Scheduler struct {
	cfg  ScheduleConfig
	poke chan struct{}
}

// NewScheduler makes a scheduler; Start runs it.
func NewScheduler(cfg ScheduleConfig) *Scheduler {
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultScheduleGrace
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Scheduler{cfg: cfg, poke: make(chan struct{}, 1)}
}

// Location is the time zone of weekly rules.
func (s *Scheduler) Location() *time.Location { return s.cfg.Location }

// Grace is how late a schedule may fire.
func (s *Scheduler) Grace() time.Duration { return s.cfg.Grace }

// Changed tells a running scheduler that schedules were added or
// deleted, so it recomputes its next wake-up.
func (s *Scheduler) Changed() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// NextTime is when schedule sc fires next after now (zero: never again).
func (s *Scheduler) NextTime(sc Schedule, after time.Time) (time.Time, error) {
	if sc.Weekly == "" {
		return time.Time{}, nil
	}
	w, err := ParseWeekly(sc.Weekly)
	if err != nil {
		return time.Time{}, err
	}
	return w.Next(after, s.cfg.Location), nil
}

// Start fires due schedules (first those missed while the server was
// down) and then each at its time, until ctx ends; it returns nil then.
func (s *Scheduler) Start(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for {
		next := s.RunDue(log)
		sleep := schedulerMaxSleep
		if !next.IsZero() {
			sleep = min(sleep, max(next.Sub(s.cfg.Now()), 10*time.Millisecond))
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.poke:
		case <-t.C:
		}
		t.Stop()
	}
}

// RunDue fires every schedule that is due now and returns the earliest
// Next of the others (zero if none).
func (s *Scheduler) RunDue(log *slog.Logger) time.Time {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	scs, err := s.cfg.Store.Schedules()
	if err != nil {
		log.Error("schedule: reading schedules", "err", err)
		return time.Time{}
	}
	now := s.cfg.Now()
	var earliest time.Time
	for _, sc := range scs {
		if sc.Next.IsZero() {
			continue
		}
		if sc.Next.After(now) {
			if earliest.IsZero() || sc.Next.Before(earliest) {
				earliest = sc.Next
			}
			continue
		}
		s.fire(log, sc, now)
	}
	return earliest
}

// fire runs one due schedule.
func (s *Scheduler) fire(log *slog.Logger, sc Schedule, now time.Time) {
	log = log.With("schedule", sc.ID, "name", sc.Name, "due", sc.Next)
	run := ScheduleRun{Due: sc.Next, Ran: now.UTC()}
	next, err := s.NextTime(sc, now)
	if err != nil {
		run.Error = err.Error() // a damaged record: stop it
		next = time.Time{}
	}
	var tasks []Task
	switch late := now.Sub(sc.Next); {
	case err != nil:
	case late > s.cfg.Grace:
		run.Missed = true
		run.Error = fmt.Sprintf("missed: due %s, the server only got to it %s later, past the grace period of %s (schedule.grace); nothing was started",
			sc.Next.Format(time.RFC3339), late.Round(time.Second), s.cfg.Grace)
	default:
		tasks, run.Error = s.tasks(sc)
	}
	fired, created, err := s.cfg.Store.FireSchedule(sc.ID, sc.Next, next, tasks, run)
	if errors.Is(err, errScheduleMoved) {
		return
	}
	if err != nil {
		log.Error("schedule: firing", "err", err)
		return
	}
	last := fired.Runs[len(fired.Runs)-1]
	ids := make([]string, len(created))
	for i, t := range created {
		ids[i] = t.ID
	}
	log.Info("schedule: fired", "tasks", ids, "skipped", len(last.Skipped), "missed", last.Missed, "error", last.Error, "next", next)
	if !sc.Wake || len(created) == 0 {
		return
	}
	if s.cfg.Wake == nil {
		log.Warn("schedule: wants wake, but " + ErrWakeOff.Error())
		return
	}
	sent, err := s.cfg.Wake.WakeTasks(created)
	log.Info("schedule: woke machines", "packets", len(sent), "err", err)
}

// tasks are the tasks a firing schedule creates, or why it creates none.
func (s *Scheduler) tasks(sc Schedule) ([]Task, string) {
	if s.cfg.Catalog != nil {
		if _, ok := s.cfg.Catalog.Get(sc.Image); !ok {
			return nil, fmt.Sprintf("image %q is no longer published: nothing was started", sc.Image)
		}
	}
	macs := sc.MACs
	if sc.Group != "" {
		ms, err := s.cfg.Store.Machines()
		if err != nil {
			return nil, "listing machines: " + err.Error()
		}
		for _, m := range ms {
			if m.Group == sc.Group {
				macs = append(macs, m.MAC)
			}
		}
		if len(macs) == 0 {
			return nil, fmt.Sprintf("no machine is in group %q now: nothing was started", sc.Group)
		}
	}
	ts := make([]Task, len(macs))
	for i, mac := range macs {
		ts[i] = Task{MAC: mac, Image: sc.Image, TaskSettings: sc.TaskSettings}
	}
	return ts, ""
}
