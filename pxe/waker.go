package pxe

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/wake"
)

// Defaults of WakeConfig.
const (
	DefaultWakeEvery   = 30 * time.Second
	DefaultWakeRetries = 5
	// maxWakeBatches bounds the batches being retried at once; past it a
	// wake is sent once, without retries.
	maxWakeBatches = 64
)

// ErrWakeOff: Wake-on-LAN is not configured on this server.
var ErrWakeOff = errors.New("wake-on-LAN is off on this server: set wake.interface or wake.broadcasts in the site config")

// WakeConfig configures a Waker.
type WakeConfig struct {
	// Send is where magic packets go (interface, addresses, port,
	// SecureOn password).
	Send wake.Config
	// Every is the time between retries for machines that have not
	// booted; 0 means DefaultWakeEvery.
	Every time.Duration
	// Retries is how many times packets are sent again after the first;
	// 0 means DefaultWakeRetries, negative means none.
	Retries int
	// Store tells whether a machine booted: a task that left pending
	// (its agent reported) or a machine seen since the first packet
	// (this server's DHCP saw it PXE-boot, or it reported).
	Store *Store
}

// Waker sends magic packets, and for machines given a task re-sends them
// every Every, up to Retries times, while the task is pending and the
// machine has not been seen. Retries end with ctx (the server's life);
// they do not survive a restart.
type Waker struct {
	cfg WakeConfig
	ctx context.Context
	log *slog.Logger

	mu      sync.Mutex
	batches int
	wg      sync.WaitGroup
}

// NewWaker makes a Waker whose retries run until ctx ends. Close waits
// for them.
func NewWaker(ctx context.Context, cfg WakeConfig, log *slog.Logger) (*Waker, error) {
	if err := cfg.Send.Check(); err != nil {
		return nil, err
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultWakeEvery
	}
	if cfg.Retries == 0 {
		cfg.Retries = DefaultWakeRetries
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Waker{cfg: cfg, ctx: ctx, log: log}, nil
}

// Wait waits for every retry loop, which end with the Waker's context.
func (w *Waker) Wait() { w.wg.Wait() }

// Wake sends one round of packets for macs (normalised MACs).
func (w *Waker) Wake(macs []string) ([]wake.Sent, error) {
	hw := make([]net.HardwareAddr, 0, len(macs))
	for _, m := range macs {
		a, err := net.ParseMAC(m)
		if err != nil {
			return nil, err
		}
		hw = append(hw, a)
	}
	sent, err := w.cfg.Send.Send(w.ctx, hw...)
	if err != nil {
		w.log.Warn("wake: sending magic packets", "machines", len(macs), "sent", len(sent), "err", err)
	}
	return sent, err
}

// WakeTasks sends packets for the tasks' machines now, then retries in
// the background for those whose task is still pending and that have not
// been seen since.
func (w *Waker) WakeTasks(tasks []Task) ([]wake.Sent, error) {
	since := w.cfg.Store.now() // the clock LastSeen is written with
	macs := make([]string, 0, len(tasks))
	ids := map[string]string{}
	for _, t := range tasks {
		macs = append(macs, t.MAC)
		ids[t.MAC] = t.ID
	}
	sent, err := w.Wake(macs)
	if w.cfg.Retries < 0 || len(macs) == 0 {
		return sent, err
	}
	w.mu.Lock()
	if w.batches >= maxWakeBatches {
		w.mu.Unlock()
		w.log.Warn("wake: too many wakes being retried; these are sent once", "machines", len(macs), "batches", maxWakeBatches)
		return sent, err
	}
	w.batches++
	w.wg.Add(1)
	w.mu.Unlock()
	go func() {
		defer func() {
			w.mu.Lock()
			w.batches--
			w.mu.Unlock()
			w.wg.Done()
		}()
		w.retry(ids, since)
	}()
	return sent, err
}

func (w *Waker) retry(ids map[string]string, since time.Time) {
	t := time.NewTicker(w.cfg.Every)
	defer t.Stop()
	for try := 1; try <= w.cfg.Retries; try++ {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		var asleep []string
		for mac, id := range ids {
			if w.booted(mac, id, since) {
				delete(ids, mac)
				continue
			}
			asleep = append(asleep, mac)
		}
		if len(asleep) == 0 {
			return
		}
		w.log.Info("wake: machines have not booted; sending again", "machines", len(asleep), "try", try+1, "of", w.cfg.Retries+1)
		w.Wake(asleep)
	}
	if len(ids) > 0 {
		w.log.Warn("wake: machines did not boot after every try: check Wake-on-LAN in their firmware and that they have power", "machines", len(ids))
	}
}

// booted: the task left pending (or is gone), or the machine was seen
// after since.
func (w *Waker) booted(mac, id string, since time.Time) bool {
	t, err := w.cfg.Store.Task(id)
	if err != nil || t.State != protocol.TaskPending {
		return true
	}
	m, err := w.cfg.Store.Machine(mac)
	return err == nil && m.LastSeen.After(since)
}
