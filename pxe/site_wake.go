package pxe

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pxeswarm/pxeswarm/pxe/catalog"
	"github.com/pxeswarm/pxeswarm/pxe/wake"
)

// SiteWake is the [wake] section: where Wake-on-LAN packets go.
type SiteWake struct {
	// Interface sends every packet as a limited broadcast
	// (255.255.255.255) out of this interface. Default: the site's
	// interface (DHCP's); "off" sends none this way.
	Interface string `toml:"interface"`
	// Broadcasts are addresses that also get every packet: subnets'
	// directed broadcasts (198.18.0.255 for 198.18.0.0/24; a router must
	// forward them to reach a remote room). Default: the broadcast
	// address of each IPv4 subnet on Interface.
	Broadcasts []netip.Addr `toml:"broadcasts"`
	// Port is the UDP port; default 9.
	Port int `toml:"port"`
	// Password is a SecureOn password (6 bytes written like a MAC, or 4
	// like an IPv4 address) for NICs that want one; default none.
	Password string `toml:"password"`
	// RetryEvery and Retries: for machines given a task with wake,
	// packets go again every RetryEvery, up to Retries more times, while
	// the task is pending and the machine has not been seen (by this
	// server's DHCP or a report). Defaults "30s" and 5; retries = -1
	// sends once.
	RetryEvery duration `toml:"retry_every"`
	Retries    int      `toml:"retries"`
}

// SiteSchedule is the [schedule] section.
type SiteSchedule struct {
	// Grace is how late a schedule may still fire: one whose time passed
	// while the server was down fires once at start if it is at most this
	// late, and is recorded as missed otherwise. Default "1h".
	Grace duration `toml:"grace"`
	// TimeZone of weekly rules ("fri 22:00"), an IANA name such as
	// "Europe/Berlin"; default: the server's local time zone.
	TimeZone string `toml:"time_zone"`
}

func (s *Site) applyWakeDefaults() {
	w := &s.Wake
	w.Interface = cmp.Or(w.Interface, s.Interface)
	w.Port = cmp.Or(w.Port, wake.DefaultPort)
	w.RetryEvery.Duration = cmp.Or(w.RetryEvery.Duration, DefaultWakeEvery)
	w.Retries = cmp.Or(w.Retries, DefaultWakeRetries)
	s.Schedule.Grace.Duration = cmp.Or(s.Schedule.Grace.Duration, DefaultScheduleGrace)
}

func (s *Site) checkWake() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadConfig, key, fmt.Sprintf(format, args...))
	}
	w := s.Wake
	for i, a := range w.Broadcasts {
		if !a.Is4() {
			return bad(fmt.Sprintf("wake.broadcasts[%d]", i), "%v is not an IPv4 address", a)
		}
	}
	if w.Port < 1 || w.Port > 65535 {
		return bad("wake.port", "%d: want 1–65535 (default 9)", w.Port)
	}
	if _, err := wake.ParsePassword(w.Password); err != nil {
		return bad("wake.password", "%v", err)
	}
	if w.RetryEvery.Duration < time.Second {
		return bad("wake.retry_every", "%v: at least 1s", w.RetryEvery.Duration)
	}
	if w.Retries < -1 || w.Retries > 100 {
		return bad("wake.retries", "%d: want -1 (send once) up to 100", w.Retries)
	}
	if g := s.Schedule.Grace.Duration; g < time.Minute {
		return bad("schedule.grace", "%v: at least 1m", g)
	}
	if _, err := time.LoadLocation(s.Schedule.TimeZone); err != nil {
		return bad("schedule.time_zone", "%q: %v: use an IANA name such as Europe/Berlin (tzdata must be installed)", s.Schedule.TimeZone, err)
	}
	return nil
}

// wakeConfig is where the site's magic packets go; Enabled is false when
// there is nowhere (no interface and no broadcasts).
func (s *Site) wakeConfig(log *slog.Logger) wake.Config {
	w := s.Wake
	cfg := wake.Config{Port: w.Port, Addrs: w.Broadcasts}
	cfg.Password, _ = wake.ParsePassword(w.Password) // checked
	if w.Interface != "off" {
		cfg.Interface = w.Interface
	}
	if len(cfg.Addrs) == 0 && cfg.Interface != "" {
		addrs, err := wake.Broadcasts(cfg.Interface)
		if err != nil {
			log.Warn("wake: no directed broadcasts (limited broadcast only)", "err", err)
		}
		cfg.Addrs = addrs
	}
	return cfg
}

// startWake makes the site's Waker (nil when Wake-on-LAN has nowhere to
// send) and Scheduler.
func (s *Site) startWake(ctx context.Context, log *slog.Logger, store *Store, cat *catalog.Catalog) (*Waker, *Scheduler, error) {
	var waker *Waker
	wlog := log.With("service", "wake")
	if wc := s.wakeConfig(wlog); wc.Enabled() {
		var err error
		if waker, err = NewWaker(ctx, WakeConfig{Send: wc, Every: s.Wake.RetryEvery.Duration, Retries: s.Wake.Retries, Store: store}, wlog); err != nil {
			return nil, nil, fmt.Errorf("%w: wake: %w", ErrBadConfig, err)
		}
		wlog.Info("wake: on", "interface", wc.Interface, "broadcasts", wc.Addrs, "port", wc.Port)
	} else {
		wlog.Info("wake: off (no interface and no wake.broadcasts)")
	}
	sch := NewScheduler(ScheduleConfig{Store: store, Catalog: cat, Grace: s.Schedule.Grace.Duration, Location: s.scheduleLocation(), Wake: waker})
	return waker, sch, nil
}

// scheduleLocation is schedule.time_zone, or the server's local zone.
// (time.LoadLocation("") would be UTC.)
func (s *Site) scheduleLocation() *time.Location {
	if s.Schedule.TimeZone == "" {
		return time.Local
	}
	loc, err := time.LoadLocation(s.Schedule.TimeZone)
	if err != nil { // Check refuses it; be safe
		return time.Local
	}
	return loc
}
