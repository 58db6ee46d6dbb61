package pxe

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Store keeps machines and tasks in a bbolt file. Every change is one
// bbolt transaction, fsynced on commit, so a restart (or a power cut)
// loses nothing that was acknowledged. Its methods are safe for
// concurrent use; a second process opening the same file fails after a
// second instead of waiting for the lock.
//
// Layout: bucket "machines" (MAC → Machine JSON), "tasks" (ID → Task
// JSON), "active" (MAC → ID of its one active task) and "schedules" (ID
// → Schedule JSON).
//
// Machine records come only from what the site trusts: the config's
// [[machine]]s (PutMachine), machines its DHCP service saw PXE-boot
// (AdmitMachine) and machines an admin gave a task (AddTasks). HTTP
// requests and reports name any MAC they like and add none. At most
// MaxMachines records are kept: admitting one more first prunes the
// least recently seen records that the config does not list and that
// have no active task.
type Store struct {
	db   *bolt.DB
	path string
	now  func() time.Time // injectable clock for tests
	// MaxMachines caps the machine records AdmitMachine lets in (0:
	// DefaultMaxMachines). Set it before use.
	MaxMachines int
}

// DefaultMaxMachines is the default cap on machine records: many rooms of
// terminals, and a bound on what made-up DHCP clients can add.
const DefaultMaxMachines = 4096

var (
	bucketMachines = []byte("machines")
	bucketTasks    = []byte("tasks")
	bucketActive   = []byte("active")
	// bucketTokens maps task ID → the task's report token. The token is
	// kept apart from the task record, so no API that lists tasks can
	// leak it; only the signed plan carries it.
	bucketTokens = []byte("tokens")
)

// storeLockTimeout bounds the wait for another process's file lock.
const storeLockTimeout = time.Second

// OpenStore opens or creates the store file at path (and its folder).
func OpenStore(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store folder for %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: storeLockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store %s is locked: is another pxeswarm serve running with the same state folder? %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: if the file is damaged, move it away (machines and tasks start empty): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMachines, bucketTasks, bucketActive, bucketTokens, bucketSchedules} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		// Active tasks from a store written before report tokens get one.
		tokens := tx.Bucket(bucketTokens)
		return tx.Bucket(bucketActive).ForEach(func(_, id []byte) error {
			if tokens.Get(id) != nil {
				return nil
			}
			return putToken(tokens, string(id), "")
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return &Store{db: db, path: path, now: func() time.Time { return time.Now().UTC() }}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Path is the store's file.
func (s *Store) Path() string { return s.path }

func getJSON[T any](b *bolt.Bucket, key string) (T, bool, error) {
	var v T
	data := b.Get([]byte(key))
	if data == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, false, fmt.Errorf("store record %q is damaged: %w", key, err)
	}
	return v, true, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

func allJSON[T any](b *bolt.Bucket) ([]T, error) {
	var ret []T
	err := b.ForEach(func(k, data []byte) error {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("store record %q is damaged: %w", k, err)
		}
		ret = append(ret, v)
		return nil
	})
	return ret, err
}

// seeLocked updates (or creates) the machine record inside tx.
func (s *Store) seeLocked(tx *bolt.Tx, mac, ip, arch string, now time.Time, report *protocol.Report) error {
	b := tx.Bucket(bucketMachines)
	m, ok, err := getJSON[Machine](b, mac)
	if err != nil {
		return err
	}
	if !ok {
		m = Machine{MAC: mac, FirstSeen: now}
	}
	if m.FirstSeen.IsZero() {
		m.FirstSeen = now
	}
	m.LastSeen = now
	if ip != "" {
		m.IP = ip
	}
	if arch != "" {
		m.Arch = arch
	}
	if report != nil {
		m.LastReport = report
	}
	return putJSON(b, mac, m)
}

// SeeMachine records that a known machine asked for something from ip
// (empty: keep the last) with firmware arch (empty: keep the last). A MAC
// the store does not know wraps ErrNoMachine: nothing is added.
func (s *Store) SeeMachine(mac, ip, arch string) error {
	mac, err := protocol.ParseMAC(mac)
	if err != nil {
		return err
	}
	now := s.now()
	return s.db.Batch(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMachines).Get([]byte(mac)) == nil {
			return unknownMachine(mac)
		}
		return s.seeLocked(tx, mac, ip, arch, now, nil)
	})
}

func unknownMachine(mac string) error {
	return fmt.Errorf("%w: %s has never PXE-booted through this server's DHCP, is not in the config and has no task", ErrNoMachine, mac)
}

// ErrTooManyMachines: the store holds MaxMachines records and none can be
// pruned.
var ErrTooManyMachines = errors.New("too many machine records")

// AdmitMachine adds mac (firmware arch, may be empty) to the machines if
// it is new, and reports whether it was. It is for what the DHCP service
// sees; a known machine costs a read, not a write. At the cap, the least
// recently seen records that are not in the config and have no active
// task are pruned first (down to nine tenths of the cap, so a stream of
// new MACs does not scan the store on every one); if none can go, it
// wraps ErrTooManyMachines and adds nothing.
func (s *Store) AdmitMachine(mac, arch string) (bool, error) {
	mac, err := protocol.ParseMAC(mac)
	if err != nil {
		return false, err
	}
	known := false
	s.db.View(func(tx *bolt.Tx) error {
		known = tx.Bucket(bucketMachines).Get([]byte(mac)) != nil
		return nil
	})
	if known {
		return false, nil
	}
	now := s.now()
	limit := cmp.Or(s.MaxMachines, DefaultMaxMachines)
	added := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMachines)
		if b.Get([]byte(mac)) != nil {
			return nil
		}
		if n := countKeys(b); n >= limit {
			if err := pruneLocked(tx, n-limit*9/10+1); err != nil {
				return err
			}
			if countKeys(b) >= limit {
				return fmt.Errorf("%w: the store holds %d machines (the cap is %d), each listed in the config or with an active task; %s is not added: raise max_machines, or cancel tasks of machines that are not yours", ErrTooManyMachines, n, limit, mac)
			}
		}
		added = true
		return s.seeLocked(tx, mac, "", arch, now, nil)
	})
	return added, err
}

// countKeys counts b's keys. (Bucket.Stats reads the committed pages,
// so it misses this transaction's changes.)
func countKeys(b *bolt.Bucket) int {
	n := 0
	b.ForEach(func(_, _ []byte) error { n++; return nil })
	return n
}

// pruneLocked deletes up to n machine records, least recently seen
// first, that the config does not list (no name or group) and that have
// no active task. Their finished tasks stay in the history.
func pruneLocked(tx *bolt.Tx, n int) error {
	active := tx.Bucket(bucketActive)
	ms, err := allJSON[Machine](tx.Bucket(bucketMachines))
	if err != nil {
		return err
	}
	ms = slices.DeleteFunc(ms, func(m Machine) bool {
		return m.Name != "" || m.Group != "" || active.Get([]byte(m.MAC)) != nil
	})
	slices.SortFunc(ms, func(a, b Machine) int { return a.LastSeen.Compare(b.LastSeen) })
	b := tx.Bucket(bucketMachines)
	for _, m := range ms[:min(n, len(ms))] {
		if err := b.Delete([]byte(m.MAC)); err != nil {
			return err
		}
	}
	return nil
}

// PutMachine sets a machine's Name and Group (from the site config),
// adding the machine if it is new. What was seen of it (IP, arch, times,
// last report) is kept.
func (s *Store) PutMachine(m Machine) error {
	mac, err := protocol.ParseMAC(m.MAC)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMachines)
		old, _, err := getJSON[Machine](b, mac)
		if err != nil {
			return err
		}
		old.MAC, old.Name, old.Group = mac, m.Name, m.Group
		return putJSON(b, mac, old)
	})
}

// Machines returns every machine, sorted by MAC.
func (s *Store) Machines() ([]Machine, error) {
	var ret []Machine
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ret, err = allJSON[Machine](tx.Bucket(bucketMachines))
		return err
	})
	return ret, err
}

// Machine returns one machine, or an error wrapping ErrNoMachine.
func (s *Store) Machine(mac string) (Machine, error) {
	mac, err := protocol.ParseMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	var m Machine
	err = s.db.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		m, ok, err = getJSON[Machine](tx.Bucket(bucketMachines), mac)
		if err == nil && !ok {
			err = fmt.Errorf("%w: %s has never booted from this server nor is it in the config", ErrNoMachine, mac)
		}
		return err
	})
	return m, err
}

// AddTask creates a pending task; see AddTasks.
func (s *Store) AddTask(t Task) (Task, error) {
	ts, err := s.AddTasks([]Task{t})
	if err != nil {
		return Task{}, err
	}
	return ts[0], nil
}

// AddTasks creates pending tasks, all or none: if any machine already has
// an active task (or appears twice), nothing is created and the error,
// wrapping ErrActiveTask, names the task in the way. Each task needs a
// MAC and an Image; ID, State, Error, times and LastReport are set here.
// Settings are not checked against the plan rules here: the HTTP API
// does that, since it knows the defaults and the images.
func (s *Store) AddTasks(ts []Task) ([]Task, error) {
	return s.addTasks(ts, nil)
}

// AddTaskWithToken is AddTask with a given report token: a capture
// task's, which is its capture's upload secret, made before the task.
func (s *Store) AddTaskWithToken(t Task, token string) (Task, error) {
	if !protocol.IsHex(token, 32, 128) {
		return Task{}, fmt.Errorf("%w: report token: want 32-128 lower-case hex digits", ErrBadTask)
	}
	ts, err := s.addTasks([]Task{t}, []string{token})
	if err != nil {
		return Task{}, err
	}
	return ts[0], nil
}

// addTasks is AddTasks; tokens, if not nil, are the tasks' report tokens.
func (s *Store) addTasks(ts []Task, tokens []string) ([]Task, error) {
	now := s.now()
	ret := make([]Task, 0, len(ts))
	for _, t := range ts {
		mac, err := protocol.ParseMAC(t.MAC)
		if err != nil {
			return nil, err
		}
		if t.Image == "" {
			return nil, fmt.Errorf("%w: no image for %s: name one", ErrBadTask, mac)
		}
		t.MAC, t.State, t.Error, t.Created, t.Updated, t.LastReport = mac, protocol.TaskPending, "", now, now, nil
		ret = append(ret, t)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range ret {
			tok := ""
			if tokens != nil {
				tok = tokens[i]
			}
			if err := addTaskLocked(tx, &ret[i], tok); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ret, nil
}

// addTaskLocked stores t (MAC and fields set) as a new task inside tx,
// giving it its ID and report token and making it the machine's active
// task. If the machine has one already it wraps ErrActiveTask naming it.
func addTaskLocked(tx *bolt.Tx, t *Task, token string) error {
	tasks, active := tx.Bucket(bucketTasks), tx.Bucket(bucketActive)
	if id := active.Get([]byte(t.MAC)); id != nil {
		other, _, err := getJSON[Task](tasks, string(id))
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: %s has task %s (%s, image %s): cancel it first (POST /api/tasks/%s/cancel) or wait for it to finish",
			ErrActiveTask, t.MAC, id, other.State, other.Image, id)
	}
	seq, err := tasks.NextSequence()
	if err != nil {
		return err
	}
	t.ID = "t" + strconv.FormatUint(seq, 10)
	if err := putJSON(tasks, t.ID, t); err != nil {
		return err
	}
	if err := putToken(tx.Bucket(bucketTokens), t.ID, token); err != nil {
		return err
	}
	// Also catches the same MAC twice in one call.
	if err := active.Put([]byte(t.MAC), []byte(t.ID)); err != nil {
		return err
	}
	// The admin named it: the machine is known from now on.
	if tx.Bucket(bucketMachines).Get([]byte(t.MAC)) == nil {
		return putJSON(tx.Bucket(bucketMachines), t.MAC, Machine{MAC: t.MAC})
	}
	return nil
}

// taskSeq orders task IDs by their sequence number.
func taskSeq(id string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimPrefix(id, "t"), 10, 64)
	return n
}

// Tasks returns every task, oldest first.
func (s *Store) Tasks() ([]Task, error) {
	var ret []Task
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ret, err = allJSON[Task](tx.Bucket(bucketTasks))
		return err
	})
	slices.SortFunc(ret, func(a, b Task) int { return cmp.Compare(taskSeq(a.ID), taskSeq(b.ID)) })
	return ret, err
}

// ImageUsers names the active tasks of image, as "t3 (52:54:00:00:00:0a,
// imaging)": the catalog's InUse, which keeps an image a task needs from
// being removed.
func (s *Store) ImageUsers(image string) ([]string, error) {
	tasks, err := s.Tasks()
	if err != nil {
		return nil, err
	}
	var users []string
	for _, t := range tasks {
		if t.Image == image && t.State.Active() {
			users = append(users, fmt.Sprintf("%s (%s, %s)", t.ID, t.MAC, t.State))
		}
	}
	return users, nil
}

// Task returns one task, or an error wrapping ErrNoTask.
func (s *Store) Task(id string) (Task, error) {
	var t Task
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		t, err = taskLocked(tx, id)
		return err
	})
	return t, err
}

func taskLocked(tx *bolt.Tx, id string) (Task, error) {
	t, ok, err := getJSON[Task](tx.Bucket(bucketTasks), id)
	if err == nil && !ok {
		err = fmt.Errorf("%w: %q: list tasks with GET /api/tasks", ErrNoTask, protocol.Clip(id, 64))
	}
	return t, err
}

// putToken gives task id its report token: tok, or a fresh one if empty.
func putToken(b *bolt.Bucket, id, tok string) error {
	if tok == "" {
		var err error
		if tok, err = protocol.NewReportToken(); err != nil {
			return err
		}
	}
	return b.Put([]byte(id), []byte(tok))
}

// ReportToken returns task id's report token: the secret its signed plan
// carries and its agent's reports must show. ErrNoTask if there is none.
func (s *Store) ReportToken(id string) (string, error) {
	var tok string
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("%w: task %q has no report token: send the task_id of this machine's plan", ErrNoTask, protocol.Clip(id, 64))
		}
		tok = string(b)
		return nil
	})
	return tok, err
}

// ActiveTask returns mac's active task, and false if it has none.
func (s *Store) ActiveTask(mac string) (Task, bool, error) {
	mac, err := protocol.ParseMAC(mac)
	if err != nil {
		return Task{}, false, err
	}
	var t Task
	var ok bool
	err = s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketActive).Get([]byte(mac))
		if id == nil {
			return nil
		}
		var err error
		t, err = taskLocked(tx, string(id))
		ok = err == nil
		return err
	})
	return t, ok, err
}

// Transition moves a task to state to. errText is kept as the task's
// Error when to is failed or canceled (for failed, a reason is required:
// an empty one becomes "failed (no reason given)"). Illegal moves (see
// CanTransition) wrap ErrBadTransition; moving to the state the task is
// already in changes nothing but Updated.
func (s *Store) Transition(id string, to protocol.TaskState, errText string) (Task, error) {
	var t Task
	now := s.now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		t, err = s.transitionLocked(tx, id, to, errText, now, nil)
		return err
	})
	return t, err
}

func (s *Store) transitionLocked(tx *bolt.Tx, id string, to protocol.TaskState, errText string, now time.Time, report *protocol.Report) (Task, error) {
	t, err := taskLocked(tx, id)
	if err != nil {
		return Task{}, err
	}
	if !protocol.CanTransition(t.State, to) {
		if !to.Valid() {
			return t, fmt.Errorf("%w: %q is not a task state", ErrBadTransition, protocol.Clip(string(to), 40))
		}
		return t, fmt.Errorf("%w: task %s is %s and cannot become %s", ErrBadTransition, t.ID, t.State, to)
	}
	if t.State != to {
		switch to {
		case protocol.TaskFailed:
			t.Error = cmp.Or(errText, "failed (no reason given)")
		case protocol.TaskCanceled:
			t.Error = errText
		}
	}
	t.State, t.Updated = to, now
	if report != nil {
		t.LastReport = report
	}
	if err := putJSON(tx.Bucket(bucketTasks), t.ID, t); err != nil {
		return t, err
	}
	if !to.Active() {
		active := tx.Bucket(bucketActive)
		if string(active.Get([]byte(t.MAC))) == t.ID {
			if err := active.Delete([]byte(t.MAC)); err != nil {
				return t, err
			}
		}
	}
	return t, nil
}

// putInventoryLocked sets a known machine's inventory inside tx.
func putInventoryLocked(tx *bolt.Tx, mac string, inv *protocol.Inventory, now time.Time) error {
	b := tx.Bucket(bucketMachines)
	m, ok, err := getJSON[Machine](b, mac)
	if err != nil || !ok {
		return err
	}
	m.Inventory, m.InventoryAt = inv, now
	return putJSON(b, mac, m)
}

// Report applies an agent's report: the machine's last report and last
// seen time, and, when r.TaskID is set, the task's last report and state
// (the phase's state; see the Phase constants). A machine the store does
// not know wraps ErrNoMachine and changes nothing. A task ID that does not
// exist or belongs to another machine wraps ErrNoTask; a report that would
// move a finished task (say, progress on a canceled one) wraps
// ErrBadTransition and changes nothing but the machine. r.At is set here.
//
// An inventory in the report becomes the machine's Inventory only when
// the report is on one of the machine's tasks and its task part is
// applied: the HTTP layer checks the task's report token for every
// report with a TaskID, so a report without one (which any LAN host can
// send) never sets it. The stored reports (LastReport) never carry it,
// nor the report's Received.
// It returns the task after the change (zero if r.TaskID is empty).
func (s *Store) Report(mac string, r protocol.Report) (Task, error) {
	mac, err := protocol.ParseMAC(mac)
	if err != nil {
		return Task{}, err
	}
	if err := r.Check(); err != nil {
		return Task{}, err
	}
	now := s.now()
	r.At = now
	inv := r.Inventory
	r.Inventory = nil
	r.Received = nil // kept by the HTTP layer's flows, not with the report
	var t Task
	var taskErr error
	err = s.db.Batch(func(tx *bolt.Tx) error {
		t, taskErr = Task{}, nil
		if tx.Bucket(bucketMachines).Get([]byte(mac)) == nil {
			return unknownMachine(mac)
		}
		if err := s.seeLocked(tx, mac, r.From, "", now, &r); err != nil {
			return err
		}
		if r.TaskID == "" {
			return nil
		}
		cur, err := taskLocked(tx, r.TaskID)
		if err != nil || cur.MAC != mac {
			// Keep the machine update; refuse the task part.
			taskErr = fmt.Errorf("%w: task %q is not a task of %s: send the task_id of this machine's plan", ErrNoTask, protocol.Clip(r.TaskID, 64), mac)
			return nil
		}
		t, err = s.transitionLocked(tx, r.TaskID, protocol.StateOfPhase(r.Phase), r.Error, now, &r)
		if errors.Is(err, ErrBadTransition) {
			taskErr, t = err, cur
			return nil
		}
		if err != nil || inv == nil {
			return err
		}
		return putInventoryLocked(tx, mac, inv, now)
	})
	if err == nil {
		err = taskErr
	}
	return t, err
}
