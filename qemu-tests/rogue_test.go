package qemutests

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// rogueAddr is the rogue server's address on its own LAN.
const rogueAddr = "198.18.9.1"

// rogueLAN is a network with no pxeswarm server: a rogue dnsmasq points
// machines at a rogue HTTP server (DHCP option 224), which answers every
// plan request with one old plan that the real server's key really
// signed, for an earlier request (another nonce) and with the attacker's
// wishes (create the table, then a shell).
type rogueLAN struct {
	lan  *netns.LAN
	vm   *vm
	hits atomic.Int32
}

func newRogueLAN(t *testing.T, c *classroom, mac string) *rogueLAN {
	t.Helper()
	needDnsmasq(t)
	r := &rogueLAN{lan: netns.NewLAN(t, "rog", netip.MustParsePrefix(rogueAddr+"/24"))}
	r.vm = &vm{name: "rogue-server", mac: mac, disk: filepath.Join(t.TempDir(), "rogue.img"), tap: r.lan.AddTap(t)}
	if err := os.WriteFile(r.vm.disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.vm.disk, 128<<20); err != nil {
		t.Fatal(err)
	}

	key, err := pxe.LoadOrCreateKey(c.state)
	if err != nil {
		t.Fatal(err)
	}
	oldNonce, _ := protocol.NewNonce()
	token, _ := protocol.NewReportToken()
	url := "http://" + rogueAddr + ":8080"
	old, err := protocol.Sign(&protocol.Plan{MAC: mac, TaskID: "t1", Action: protocol.ActionDeploy,
		Image: c.tos.Image.Name, Torrent: url + "/torrent/" + c.tos.Image.Name + ".torrent",
		InfoHash: c.tos.Image.InfoHash.HexString(), Target: protocol.Target{Disk: protocol.FirstDisk},
		CreateTable: true, CheckMode: "fresh", After: "shell", OnError: "shell", Issued: time.Now().Add(-24 * time.Hour),
		Nonce: oldNonce, ReportToken: token}, key)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /plan/{mac}", func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Query().Get(protocol.NonceParam) != "" {
			r.hits.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(old)
	})
	var ln net.Listener
	if err := r.lan.NS.Do(func() (err error) {
		ln, err = net.Listen("tcp", rogueAddr+":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	dir := t.TempDir()
	var dmLog testlog.Buffer
	dm := r.lan.NS.Command(context.Background(), "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
		"--port=0", "--interface="+r.lan.Bridge, "--bind-interfaces", "--dhcp-authoritative",
		"--dhcp-range=198.18.9.50,198.18.9.90,255.255.255.0,10m", "--dhcp-option=224,"+url,
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"),
		"--user=root", "--log-dhcp", "--log-facility=-")
	dm.Stdout, dm.Stderr = &dmLog, &dmLog
	netns.Start(t, dm)
	waitFor(t, "rogue dnsmasq up", 10*time.Second, func() bool { return strings.Contains(dmLog.String(), "DHCP, IP range") })
	return r
}

// served says whether the rogue server was asked for a plan with a nonce.
func (r *rogueLAN) served() bool { return r.hits.Load() > 0 }
