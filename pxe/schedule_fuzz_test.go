package pxe

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/pxe/wake"
)

// FuzzScheduleAPI sends arbitrary bodies with the admin token to POST
// /api/schedules (route 0) and POST /api/wake (route 1) of the real
// handler, Wake-on-LAN pointed at a loopback socket. Every reply is JSON
// and no 5xx; a schedule that is made fires in the future (within a year
// and a week), for the published image and someone, and is deleted again
// so the next input may make one too; a wake sends only for MACs.
func FuzzScheduleAPI(f *testing.F) {
	ln, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	fx := fuzzFixture(f)
	fx.store.PutMachine(Machine{MAC: macB, Group: "room1"})
	waker, err := NewWaker(f.Context(), WakeConfig{Send: wake.Config{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Port: ln.LocalAddr().(*net.UDPAddr).Port}, Retries: -1, Store: fx.store}, nil)
	if err != nil {
		f.Fatal(err)
	}
	fx.cfg.Wake, fx.cfg.Scheduler = waker, NewScheduler(ScheduleConfig{Store: fx.store, Location: time.UTC})
	if fx.h, err = fx.cfg.HandlerWithLog(slog.New(slog.DiscardHandler)); err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"weekly": "fri 22:00", "group": "room1", "image": "demo", "wake": true, "after": "poweroff"}`,
		`{"weekly": "mon-sun 00:00", "macs": ["52:54:00:00:00:0a", "52-54-00-00-00-0b"], "image": "demo", "name": "x"}`,
		`{"at": "2099-01-01T00:00:00Z", "mac": "52:54:00:00:00:0a", "image": "demo"}`,
		`{"at": "` + time.Now().Add(time.Hour).Format(time.RFC3339) + `", "mac": "52:54:00:00:00:0a", "image": "demo", "check": "verify", "target": {"label": "root"}}`,
		`{"weekly": "fri 22:00", "at": "2099-01-01T00:00:00Z", "group": "room1", "image": "demo"}`,
		`{"weekly": "fri 22:00", "mac": "52:54:00:00:00:0a", "macs": ["52:54:00:00:00:0a"], "image": "demo"}`,
		`{"weekly": "fri 22:00", "group": "room1", "image": "demo", "seed_for": "-1s"}`,
		`{"weekly": "fri 22:00", "group": "room1", "image": "demo", "name": "a\u0000b"}`,
		`[]`, `null`, ``, `{"weekly": 5}`,
	} {
		f.Add(uint8(0), []byte(seed))
	}
	for _, seed := range []string{`{"macs": ["52:54:00:00:00:0a"]}`, `{"group": "room1"}`, `{"macs": []}`, `{"macs": ["ff:ff:ff:ff:ff:ff", "x"]}`, `{"group": "room1", "macs": ["52:54:00:00:00:0a"]}`} {
		f.Add(uint8(1), []byte(seed))
	}
	auth := []string{"Authorization", "Bearer " + testToken}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		if route%2 == 1 {
			w := serveRaw(fx.h, "POST", "/api/wake", body, auth...)
			checkReply(t, "POST /api/wake", w)
			if w.Code != http.StatusOK {
				return
			}
			var reply WakeReply
			if err := json.Unmarshal(w.Body.Bytes(), &reply); err != nil || len(reply.Sent) == 0 {
				t.Fatalf("200 reply %q: %v", w.Body, err)
			}
			for _, s := range reply.Sent {
				if _, err := net.ParseMAC(s.MAC); err != nil {
					t.Fatalf("sent for %q", s.MAC)
				}
			}
			return
		}
		w := serveRaw(fx.h, "POST", "/api/schedules", body, auth...)
		checkReply(t, "POST /api/schedules", w)
		if w.Code != http.StatusCreated {
			return
		}
		var sc Schedule
		if err := json.Unmarshal(w.Body.Bytes(), &sc); err != nil {
			t.Fatalf("201 reply %q: %v", w.Body, err)
		}
		now := time.Now()
		if !sc.Next.After(now) || sc.Next.After(now.Add(maxScheduleAhead+8*24*time.Hour)) || sc.Image != "demo" ||
			(len(sc.MACs) == 0) == (sc.Group == "") || (sc.At.IsZero()) == (sc.Weekly == "") {
			t.Fatalf("schedule made from %q: %+v", body, sc)
		}
		if dw := serveRaw(fx.h, "DELETE", "/api/schedules/"+sc.ID, nil, auth...); dw.Code != http.StatusOK {
			t.Fatalf("DELETE %s = %d %s", sc.ID, dw.Code, dw.Body)
		}
	})
}
