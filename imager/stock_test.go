package imager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/internal/testnet"
)

// stockSeeder is a stock BitTorrent client seeding one torrent.
type stockSeeder struct {
	addr string          // where it takes peer connections
	out  *testlog.Buffer // what it printed
}

// startTransmission runs transmission-cli seeding torrent from dataDir
// (the folder that holds the torrent's name), until the test ends.
func startTransmission(t *testing.T, torrent, dataDir string) stockSeeder {
	t.Helper()
	needs.Tool(t, "transmission-cli")
	port := testnet.FreePort(t)
	out := &testlog.Buffer{}
	tr := exec.Command("transmission-cli", "-g", filepath.Join(t.TempDir(), "conf"), "-w", dataDir, "-p", fmt.Sprint(port), torrent)
	tr.Stdout, tr.Stderr = out, out
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Process.Kill(); tr.Wait() })
	// Transmission checks its data, then says "Seeding". (A probe dial
	// instead made it ignore our address afterwards.)
	for deadline := time.Now().Add(90 * time.Second); !strings.Contains(out.String(), "Seeding"); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("transmission-cli did not start seeding in 90s:\n%s", out.String())
		}
	}
	return stockSeeder{addr: fmt.Sprint("127.0.0.1:", port), out: out}
}

// startQbittorrent runs qbittorrent-nox with its own profile, adds
// torrent through its WebUI API (v2) with dataDir as the save path, and
// waits until it has checked the data and seeds. DHT, PeX, LSD and UPnP
// are off; its WebUI listens on loopback.
func startQbittorrent(t *testing.T, torrent, dataDir string) stockSeeder {
	t.Helper()
	needs.Tool(t, "qbittorrent-nox")
	profile := t.TempDir()
	webPort, port := testnet.FreePort(t), testnet.FreePort(t)
	conf := filepath.Join(profile, "qBittorrent", "config")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	// qBittorrent 4.5 has no --confirm-legal-notice: the key accepts it.
	ini := `[LegalNotice]
Accepted=true

[BitTorrent]
Session\DHTEnabled=false
Session\PeXEnabled=false
Session\LSDEnabled=false

[Preferences]
Connection\UPnP=false
WebUI\Address=127.0.0.1
WebUI\LocalHostAuth=false
WebUI\UseUPnP=false
`
	if err := os.WriteFile(filepath.Join(conf, "qBittorrent.conf"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &testlog.Buffer{}
	qb := exec.Command("qbittorrent-nox", "--profile="+profile, fmt.Sprint("--webui-port=", webPort), fmt.Sprint("--torrenting-port=", port))
	qb.Stdout, qb.Stderr = out, out
	if err := qb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qb.Process.Kill(); qb.Wait() })
	api := fmt.Sprintf("http://127.0.0.1:%d/api/v2/", webPort)

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("torrents", filepath.Base(torrent))
	data, err := os.ReadFile(torrent)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	mw.WriteField("savepath", dataDir)
	mw.WriteField("skip_checking", "false")
	mw.Close()
	var added bool
	for deadline := time.Now().Add(20 * time.Second); !added; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("qbittorrent-nox's WebUI did not take the torrent in 20s:\n%s", out.String())
		}
		resp, err := http.Post(api+"torrents/add", mw.FormDataContentType(), bytes.NewReader(body.Bytes()))
		if err != nil {
			continue // not listening yet
		}
		b, _ := readAll(resp)
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(b) != "Ok." {
			t.Fatalf("qbittorrent-nox torrents/add: %s %q", resp.Status, b)
		}
		added = true
	}
	var state string
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("qbittorrent-nox did not seed in 90s (state %q):\n%s", state, out.String())
		}
		resp, err := http.Get(api + "torrents/info")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := readAll(resp)
		var ts []struct {
			State    string  `json:"state"`
			Progress float64 `json:"progress"`
		}
		if err := json.Unmarshal([]byte(b), &ts); err != nil || len(ts) != 1 {
			t.Fatalf("qbittorrent-nox torrents/info = %q (%v), want one torrent", b, err)
		}
		state = ts[0].State
		if state == "error" || state == "missingFiles" {
			t.Fatalf("qbittorrent-nox cannot seed the torrent from %s: state %q", dataDir, state)
		}
		if ts[0].Progress == 1 && (state == "uploading" || state == "stalledUP") {
			break
		}
	}
	// Wait for its socket, without connecting to it. (It still closes
	// connections for a few seconds after that: the fetch dials again.)
	for deadline := time.Now().Add(10 * time.Second); !listening(t, port); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("qbittorrent-nox does not listen on 127.0.0.1:%d after 10s:\n%s", port, out.String())
		}
	}
	return stockSeeder{addr: fmt.Sprint("127.0.0.1:", port), out: out}
}

// listening reports whether a socket listens on 127.0.0.1:port (or any
// IPv4 address), from /proc/net/tcp: without a probe connection.
func listening(t *testing.T, port int) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("read /proc/net/tcp: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// f[1] is local address:port in hex, f[3] the state (0A: LISTEN).
		if len(f) > 3 && f[3] == "0A" && (f[1] == fmt.Sprintf("0100007F:%04X", port) || f[1] == fmt.Sprintf("00000000:%04X", port)) {
			return true
		}
	}
	return false
}

func readAll(resp *http.Response) (string, error) {
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(resp.Body)
	return b.String(), err
}

// TestStockSeeders: a stock client (Transmission 3, qBittorrent 4.5)
// alone, with no pxeswarm peer in the swarm, is enough for a fetch with
// default settings, both of a torrent made by a stock tool
// (transmission-create, asked at 16 KiB from the start) and of a pxeswarm
// image (asked at 64 KiB until the stock client offers pieces, then at
// 16 KiB: stock.go). Before the fall-back, the pxeswarm image got 0 bytes
// from either client; before the reqq fix, a fetch from Transmission
// stopped at 16 MiB.
func TestStockSeeders(t *testing.T) {
	needs.Tool(t, "transmission-create")
	dir := t.TempDir()
	// The data as stock clients find it: a single-file torrent's file
	// under its name, a pxeswarm image's files under name/path.
	flat := filepath.Join(dir, "flat")
	os.MkdirAll(filepath.Join(flat, "disk"), 0o755)
	src := filepath.Join(flat, "disk.img")
	// Past 16 MiB: a fetch from Transmission stopped after 1022 chunks
	// when we took its advertised reqq at its word (capPartnerRequests).
	writeRandom(t, src, 20<<20+999, 12)
	if err := os.Link(src, filepath.Join(flat, "disk", "disk.img")); err != nil {
		t.Fatal(err)
	}
	stock := filepath.Join(dir, "stock.torrent")
	if out, err := exec.Command("transmission-create", "-o", stock, "-s", "256", src).CombinedOutput(); err != nil {
		t.Fatalf("transmission-create: %v\n%s", err, out)
	}
	px, err := Create(context.Background(), testlog.New(t), CreateConfig{Name: "disk", Sources: []string{filepath.Join(flat, "disk", "disk.img")}})
	if err != nil {
		t.Fatal(err)
	}
	pxFile := filepath.Join(dir, "px.torrent")
	if err := px.WriteFile(pxFile); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	for _, client := range []struct {
		name  string
		start func(*testing.T, string, string) stockSeeder
	}{
		{"transmission", startTransmission},
		{"qbittorrent", startQbittorrent},
	} {
		for _, tor := range []struct {
			name, file string
		}{
			{"transmission-create", stock},
			{"pxeswarm mktorrent", pxFile},
		} {
			t.Run(client.name+"/"+tor.name, func(t *testing.T) {
				im, err := LoadFile(tor.file)
				if err != nil {
					t.Fatal(err)
				}
				seeder := client.start(t, tor.file, flat)
				target := filepath.Join(t.TempDir(), "target")
				cfg := testingConfig(t)
				cfg.Image, cfg.Paths, cfg.Mode, cfg.Trackers = im, []string{target}, ModeFresh, []string{}
				cfg.Peers = []string{seeder.addr}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				p, err := cfg.Run(ctx, testlog.New(t), 0)
				if err != nil {
					out := seeder.out.String()
					t.Fatalf("fetch from %s alone = %v (%s of %s verified); it said:\n%s", client.name, err,
						bytesize.Format(p.Done), bytesize.Format(im.Length), out[max(0, len(out)-2000):])
				}
				if got, _ := os.ReadFile(target); !bytes.Equal(got, want) {
					t.Errorf("target differs from what %s seeds", client.name)
				}
				if p.Downloaded < im.Length || p.State != StateDone {
					t.Errorf("Progress after the fetch: %s, received %d bytes, want %s and at least %d", p.State, p.Downloaded, StateDone, im.Length)
				}
			})
		}
	}
}

// TestWebSeedAlone: a BEP 19 web seed (a plain HTTP file server) with no
// peer and no tracker is enough for a fetch: a pxeswarm image with the
// seed in its url-list (files at URL/name/path), and a single-file
// torrent from transmission-create with the seed given to the fetch
// (Config.WebSeeds, `fetch --webseed`; the URL names the file itself).
// The log compares the time with one plain GET of the same bytes.
func TestWebSeedAlone(t *testing.T) {
	needs.Tool(t, "transmission-create")
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "img"), 0o755)
	parts := []string{filepath.Join(root, "img", "esp.img"), filepath.Join(root, "img", "root.img")}
	writeRandom(t, parts[0], 1<<20+333, 21)
	writeRandom(t, parts[1], 24<<20+77, 22)
	var gets atomic.Int64
	files := http.FileServer(http.Dir(root))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	px, err := Create(context.Background(), testlog.New(t), CreateConfig{
		Name: "img", Sources: parts, Table: "gpt", WebSeeds: []string{srv.URL + "/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range px.Files {
		if want := filepath.Base(parts[i]); f.Path != fmt.Sprintf("p%d-%s", i+1, want) {
			t.Fatalf("part %d is %q in the torrent; the test serves it as p%d-%s", i, f.Path, i+1, want)
		}
		os.Rename(parts[i], filepath.Join(root, "img", f.Path))
		parts[i] = filepath.Join(root, "img", f.Path)
	}
	stockFile := filepath.Join(t.TempDir(), "stock.torrent")
	if out, err := exec.Command("transmission-create", "-o", stockFile, "-s", "256", parts[1]).CombinedOutput(); err != nil {
		t.Fatalf("transmission-create: %v\n%s", err, out)
	}
	stock, err := LoadFile(stockFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		im      *Image
		seeds   []string
		sources []string
	}{
		{"pxeswarm image, url-list", px, nil, parts},
		{"stock single file, --webseed", stock, []string{srv.URL + "/img/" + filepath.Base(parts[1])}, parts[1:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var targets []string
			for i := range tc.sources {
				targets = append(targets, filepath.Join(t.TempDir(), fmt.Sprint("target", i)))
			}
			before := gets.Load()
			cfg := testingConfig(t)
			cfg.Image, cfg.Paths, cfg.Mode, cfg.Trackers, cfg.WebSeeds = tc.im, targets, ModeFresh, []string{}, tc.seeds
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			p, err := cfg.Run(ctx, testlog.New(t), 0)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("fetch from the web seed alone = %v (%s of %s verified)", err, bytesize.Format(p.Done), bytesize.Format(tc.im.Length))
			}
			sameFiles(t, tc.sources, targets)
			if gets.Load() == before || p.FromSeeders < tc.im.Length {
				t.Errorf("fetch made %d HTTP requests and counted %d bytes from image hosts, want some and at least %d", gets.Load()-before, p.FromSeeders, tc.im.Length)
			}
			start = time.Now()
			var n int64
			for _, src := range tc.sources {
				rel, _ := filepath.Rel(root, src)
				resp, err := http.Get(srv.URL + "/" + filepath.ToSlash(rel))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := readAll(resp)
				n += int64(len(b))
			}
			t.Logf("%s: the fetch took %v, plain GETs of the same %s %v (anacrolix starts web seed requests on a 5s timer)",
				tc.name, took.Round(time.Millisecond), bytesize.Format(n), time.Since(start).Round(time.Millisecond))
		})
	}
}
