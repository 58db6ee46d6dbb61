package pxe

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
	bolt "go.etcd.io/bbolt"
)

// bucketSchedules maps schedule ID → Schedule JSON.
var bucketSchedules = []byte("schedules")

// MaxSchedules bounds the schedules a store keeps.
const MaxSchedules = 256

// AddSchedule stores a new schedule, giving it its ID and Created time;
// the caller has checked it and set Next.
func (s *Store) AddSchedule(sc Schedule) (Schedule, error) {
	sc.Created, sc.Runs = s.now(), nil
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSchedules)
		if n := countKeys(b); n >= MaxSchedules {
			return fmt.Errorf("%w: the store holds %d schedules, the most it keeps: delete old ones (DELETE /api/schedules/{id})", ErrBadTask, n)
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		sc.ID = "s" + strconv.FormatUint(seq, 10)
		return putJSON(b, sc.ID, sc)
	})
	return sc, err
}

// Schedules returns every schedule, oldest first.
func (s *Store) Schedules() ([]Schedule, error) {
	var ret []Schedule
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ret, err = allJSON[Schedule](tx.Bucket(bucketSchedules))
		return err
	})
	seq := func(id string) uint64 { n, _ := strconv.ParseUint(strings.TrimPrefix(id, "s"), 10, 64); return n }
	slices.SortFunc(ret, func(a, b Schedule) int { return cmp.Compare(seq(a.ID), seq(b.ID)) })
	return ret, err
}

// DeleteSchedule removes a schedule and returns it, or wraps
// ErrNoSchedule. Tasks it started stay.
func (s *Store) DeleteSchedule(id string) (Schedule, error) {
	var sc Schedule
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSchedules)
		var ok bool
		var err error
		if sc, ok, err = getJSON[Schedule](b, id); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: %q: list schedules with GET /api/schedules", ErrNoSchedule, protocol.Clip(id, 64))
		}
		return b.Delete([]byte(id))
	})
	return sc, err
}

// FireSchedule records one run of schedule id that was due at due, in
// one transaction with the tasks it creates: so a schedule fires once,
// whatever restarts or a second scheduler do. If the schedule is gone or
// its Next is no longer due (it fired already) nothing changes and the
// error wraps errScheduleMoved. Machines with an active task are skipped
// (named in run.Skipped); the others get their task. next becomes the
// schedule's Next (zero: done).
func (s *Store) FireSchedule(id string, due, next time.Time, tasks []Task, run ScheduleRun) (Schedule, []Task, error) {
	now := s.now()
	var sc Schedule
	var created []Task
	err := s.db.Update(func(tx *bolt.Tx) error {
		created = nil
		b := tx.Bucket(bucketSchedules)
		var ok bool
		var err error
		if sc, ok, err = getJSON[Schedule](b, id); err != nil {
			return err
		}
		if !ok || !sc.Next.Equal(due) {
			return fmt.Errorf("%w: %s", errScheduleMoved, id)
		}
		for _, t := range tasks {
			t.State, t.Error, t.Created, t.Updated, t.LastReport = protocol.TaskPending, "", now, now, nil
			err := addTaskLocked(tx, &t, "")
			if errors.Is(err, ErrActiveTask) {
				run.Skipped = append(run.Skipped, fmt.Sprintf("%s: %v", t.MAC, err))
				continue
			}
			if err != nil {
				return err
			}
			created = append(created, t)
			run.Tasks = append(run.Tasks, t.ID)
		}
		sc.Next = next
		sc.Runs = append(sc.Runs, run)
		if n := len(sc.Runs); n > maxScheduleRuns {
			sc.Runs = sc.Runs[n-maxScheduleRuns:]
		}
		return putJSON(b, id, sc)
	})
	return sc, created, err
}
