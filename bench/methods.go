package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// method is one way to get the image onto every client.
type method interface {
	name() string
	// server starts the image host's side; it returns once it serves.
	server(ctx context.Context, r *run) (*proc, error)
	// client starts client k; its done and progress come from its output
	// or its target file.
	client(ctx context.Context, r *run, k int) (*proc, error)
	// target is where client k's copy ends up.
	target(r *run, k int) string
	// supports tells whether the method can run a scenario at all.
	supports(sc scenario) bool
	// shipsUsed tells whether the method ships only the blocks a
	// filesystem uses (its floor is used/R), or every byte (S/R).
	shipsUsed() bool
}

var pctRe = regexp.MustCompile(`(\d+(?:\.\d+)?)%`)

func lastPct(line string) (float64, bool) {
	m := pctRe.FindAllStringSubmatch(line, -1)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	return v / 100, err == nil
}

// --- pxeswarm -----------------------------------------------------------

type pxeswarmMethod struct{}

func (pxeswarmMethod) name() string           { return "pxeswarm" }
func (pxeswarmMethod) supports(scenario) bool { return true }
func (pxeswarmMethod) shipsUsed() bool        { return true }
func (pxeswarmMethod) target(r *run, k int) string {
	return filepath.Join(r.dir, fmt.Sprintf("c%d.img", k))
}

// seedPxeswarm runs pxeswarm's seeder and tracker on torrent.
func seedPxeswarm(ctx context.Context, r *run, torrent string) (*proc, error) {
	p, err := r.start(ctx, "srv", r.cfg.bin, "seed", "--torrent", torrent, "--source", r.img.path,
		"--listen", serverIP()+":6881", "--tracker-listen", serverIP()+":8080", "--interval", "2s", "--progress-every", "5s")
	if err != nil {
		return nil, err
	}
	return p, p.waitLine(regexp.MustCompile(`joined swarm`), 20*time.Second)
}

// pxeswarm's torrent of a filesystem image is mktorrent's default: the
// used blocks.
func (pxeswarmMethod) server(ctx context.Context, r *run) (*proc, error) {
	return seedPxeswarm(ctx, r, r.img.torrent)
}

func (m pxeswarmMethod) client(ctx context.Context, r *run, k int) (*proc, error) {
	p, err := r.start(ctx, clientName(k), r.cfg.bin, "fetch", "--torrent", r.img.torrent, "--target", m.target(r, k),
		"--listen", r.lab.clientIP(k)+":6881", "--seed-for", "1h", "--progress-every", "500ms")
	if err != nil {
		return nil, err
	}
	p.doneRe = regexp.MustCompile(`image complete`)
	p.pctRe = regexp.MustCompile(`^fetch: downloading`)
	return p, nil
}

// --- HTTP unicast --------------------------------------------------------

type httpMethod struct{}

func (httpMethod) name() string { return "http" }

// HTTP unicast runs the homogeneous scenario only: its time is N×T_min
// by construction, and the runs are the longest of the matrix.
func (httpMethod) supports(sc scenario) bool { return sc.kind == "homogeneous" }
func (httpMethod) shipsUsed() bool           { return false }
func (httpMethod) target(r *run, k int) string {
	return filepath.Join(r.dir, fmt.Sprintf("c%d.img", k))
}

func (httpMethod) server(ctx context.Context, r *run) (*proc, error) {
	self, _ := os.Executable()
	p, err := r.start(ctx, "srv", self, "serve-http", "--dir", filepath.Dir(r.img.path), "--listen", serverIP()+":8000")
	if err != nil {
		return nil, err
	}
	return p, p.waitLine(regexp.MustCompile(`serving`), 10*time.Second)
}

func (m httpMethod) client(ctx context.Context, r *run, k int) (*proc, error) {
	url := fmt.Sprintf("http://%s:8000/%s", serverIP(), filepath.Base(r.img.path))
	p, err := r.start(ctx, clientName(k), "curl", "-sS", "--fail", "-o", m.target(r, k), url)
	if err != nil {
		return nil, err
	}
	p.doneOnExit = true
	p.sizeOf = m.target(r, k)
	return p, nil
}

// --- multicast (udpcast) ---------------------------------------------------

type multicastMethod struct{}

func (multicastMethod) name() string { return "udpcast" }
func (multicastMethod) supports(sc scenario) bool {
	// A receiver that starts late misses the session: udpcast cannot join
	// a transfer under way (Clonezilla and FOG have the same limit). Slow
	// peers run at 1000 Mbit/s links: a sender at 0.95 of that to
	// receivers held to a few percent of a core only measures the loss.
	return sc.kind != "late" && sc.kind != "slowpeers"
}
func (multicastMethod) shipsUsed() bool { return false }
func (multicastMethod) target(r *run, k int) string {
	return filepath.Join(r.dir, fmt.Sprintf("c%d.img", k))
}

func (multicastMethod) server(ctx context.Context, r *run) (*proc, error) {
	// The sender waits until all N receivers joined (up to 20 s), then
	// sends at 95% of the link rate, as an admin would set it. Broadcast
	// rather than multicast: this machine's kernel did not deliver
	// udpcast's multicast rendezvous between namespaces; broadcast is the
	// same protocol (one sender, receivers acknowledge slices, the pace of
	// the slowest) on one LAN segment.
	return r.start(ctx, "srv", "udp-sender", "--broadcast", "--file", r.img.path, "--interface", "eth0",
		"--min-receivers", strconv.Itoa(r.sc.n), "--max-wait", "20", "--nokbd", "--no-progress",
		"--max-bitrate", fmt.Sprintf("%dm", r.cfg.rate*95/100/1e6), "--retries-until-drop", "30")
}

func (m multicastMethod) client(ctx context.Context, r *run, k int) (*proc, error) {
	p, err := r.start(ctx, clientName(k), "udp-receiver", "--file", m.target(r, k), "--interface", "eth0", "--nokbd", "--no-progress")
	if err != nil {
		return nil, err
	}
	p.doneOnExit = true
	p.sizeOf = m.target(r, k)
	return p, nil
}

// --- other BitTorrent clients as the leechers ------------------------------

// btClient is what the other BitTorrent clients share: they run every
// scenario, as leechers against the pxeswarm seeder and tracker, each
// client downloading into its own folder (prefix and client number).
type btClient struct{ prefix string }

func (btClient) supports(scenario) bool { return true }
func (btClient) shipsUsed() bool        { return false }

// The other clients get the raw image (mktorrent --raw): they know
// nothing of used-block layouts.
func (c btClient) server(ctx context.Context, r *run) (*proc, error) {
	return seedPxeswarm(ctx, r, r.img.rawTorrent)
}

// dir is client k's download folder.
func (c btClient) dir(r *run, k int) string {
	return filepath.Join(r.dir, fmt.Sprintf("%s%d", c.prefix, k))
}

func (c btClient) target(r *run, k int) string {
	return filepath.Join(c.dir(r, k), r.img.name, filepath.Base(r.img.path))
}

// --- Transmission (libtransmission) ----------------------------------------

type transmissionMethod struct{ btClient }

func (transmissionMethod) name() string { return "transmission" }

func (m transmissionMethod) client(ctx context.Context, r *run, k int) (*proc, error) {
	conf := filepath.Join(r.dir, fmt.Sprintf("trconf%d", k))
	dl := m.dir(r, k)
	os.MkdirAll(conf, 0o755)
	os.MkdirAll(dl, 0o755)
	settings := map[string]any{
		"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
		"port-forwarding-enabled": false, "bind-address-ipv4": r.lab.clientIP(k), "peer-port": 51413,
		"ratio-limit-enabled": false, "idle-seeding-limit-enabled": false,
		"speed-limit-up-enabled": false, "speed-limit-down-enabled": false,
		"peer-limit-global": 400, "peer-limit-per-torrent": 100, "encryption": 0,
		"download-dir": dl, "incomplete-dir-enabled": false, "prefetch-enabled": true,
		"cache-size-mb": 64, "message-level": 1,
	}
	b, _ := json.MarshalIndent(settings, "", "  ")
	os.WriteFile(filepath.Join(conf, "settings.json"), b, 0o644)
	p, err := r.start(ctx, clientName(k), "transmission-cli", "-g", conf, "-w", dl, "-p", "51413", "-et", r.img.rawTorrent)
	if err != nil {
		return nil, err
	}
	p.doneRe = regexp.MustCompile(`Seeding`)
	p.pctRe = regexp.MustCompile(`^Progress:`)
	return p, nil
}

// --- qBittorrent (libtorrent-rasterbar) ---------------------------------

// qbittorrentMethod runs qbittorrent-nox (libtorrent 2.0) as the leechers
// against the same pxeswarm seeder and tracker: the libtorrent-class
// reference. Its settings are an admin's LAN settings: no DHT, PeX, LSD or
// uTP, no encryption (the seeder speaks plain BitTorrent), no queueing, no
// ratio limit, and no cap on upload slots or connections (qBittorrent caps
// them per torrent by default; how much that would cost here was not
// measured).
type qbittorrentMethod struct{ btClient }

func (qbittorrentMethod) name() string { return "qbittorrent" }

func (m qbittorrentMethod) client(ctx context.Context, r *run, k int) (*proc, error) {
	profile := filepath.Join(r.dir, fmt.Sprintf("qbprofile%d", k))
	dl := m.dir(r, k)
	done := filepath.Join(r.dir, fmt.Sprintf("qb%d.done", k))
	conf := filepath.Join(profile, "qBittorrent", "config")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		return nil, err
	}
	os.MkdirAll(dl, 0o755)
	ini := fmt.Sprintf(`[LegalNotice]
Accepted=true

[AutoRun]
enabled=true
program=touch %s

[BitTorrent]
Session\AddExtensionToIncompleteFiles=false
Session\AnonymousModeEnabled=false
Session\BTProtocol=TCP
Session\DefaultSavePath=%s
Session\DHTEnabled=false
Session\Encryption=2
Session\GlobalMaxRatio=-1
Session\LSDEnabled=false
Session\MaxConnections=-1
Session\MaxConnectionsPerTorrent=-1
Session\MaxUploads=-1
Session\MaxUploadsPerTorrent=-1
Session\PeXEnabled=false
Session\Port=6881
Session\Preallocation=false
Session\QueueingSystemEnabled=false

[Preferences]
Connection\UPnP=false
General\StatusbarExternalIPDisplayed=false
WebUI\Address=127.0.0.1
WebUI\Port=8081
WebUI\LocalHostAuth=false
`, done, dl)
	if err := os.WriteFile(filepath.Join(conf, "qBittorrent.conf"), []byte(ini), 0o644); err != nil {
		return nil, err
	}
	p, err := r.start(ctx, clientName(k), "qbittorrent-nox", "--profile="+profile, "--save-path="+dl, r.img.rawTorrent)
	if err != nil {
		return nil, err
	}
	// Done: qBittorrent runs the AutoRun program when the torrent has
	// finished (every piece verified); the file's mtime is the moment.
	// Progress (for the late joiners): the target is sparse, so its
	// allocated blocks are what has arrived.
	p.doneFile = done
	p.allocOf = m.target(r, k)
	return p, nil
}

// --- Clonezilla: partclone piped into udpcast ------------------------------

// clonezillaMethod is Clonezilla's multicast restore, run as its own
// commands: on the server partclone reads the filesystem's used blocks
// into its image stream and udp-sender sends that stream to all receivers
// at once; each client runs udp-receiver into partclone -r, which writes
// the blocks onto its target partition. Clonezilla stores its images
// compressed (zstd or gzip) and adds a decompressor on each side; the
// bench leaves it out, as the pipeline does: the files are random
// data and would not shrink, and on 2 cores a compressor would cost time
// the other methods do not pay. The sender settings are those of the
// udpcast method (broadcast, 0.95 R, wait for all N receivers).
type clonezillaMethod struct{}

func (clonezillaMethod) name() string { return "clonezilla" }

// It needs a filesystem partclone reads, and like udpcast it cannot take
// a receiver that starts late.
func (clonezillaMethod) supports(sc scenario) bool { return sc.fs != "" && sc.kind != "late" }
func (clonezillaMethod) shipsUsed() bool           { return true }
func (clonezillaMethod) target(r *run, k int) string {
	return filepath.Join(r.dir, fmt.Sprintf("c%d.img", k))
}

// partclone is the partclone program for the image's filesystem.
func partclone(r *run) string {
	if r.img.fs == "ntfs" {
		return "partclone.ntfs"
	}
	return "partclone.extfs"
}

func (clonezillaMethod) server(ctx context.Context, r *run) (*proc, error) {
	script := fmt.Sprintf("%s -c -q -s %s -o - -L %s | udp-sender --broadcast --interface eth0 --min-receivers %d --max-wait 20 --nokbd --no-progress --max-bitrate %dm --retries-until-drop 30",
		partclone(r), r.img.path, filepath.Join(r.dir, "partclone-srv.log"), r.sc.n, r.cfg.rate*95/100/1e6)
	return r.start(ctx, "srv", "bash", "-o", "pipefail", "-c", script)
}

func (m clonezillaMethod) client(ctx context.Context, r *run, k int) (*proc, error) {
	// The target is a partition of the image's size, as on a disk.
	if err := os.WriteFile(m.target(r, k), nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(m.target(r, k), r.img.size); err != nil {
		return nil, err
	}
	script := fmt.Sprintf("udp-receiver --interface eth0 --nokbd --no-progress | %s -r -s - -O %s -L %s",
		partclone(r), m.target(r, k), filepath.Join(r.dir, fmt.Sprintf("partclone-c%d.log", k)))
	p, err := r.start(ctx, clientName(k), "bash", "-o", "pipefail", "-c", script)
	if err != nil {
		return nil, err
	}
	// Done: the pipeline exits 0 once partclone has written and synced
	// every block. Progress: partclone's "Completed: 41.20%" lines.
	p.doneOnExit = true
	p.pctRe = regexp.MustCompile(`Complete`)
	return p, nil
}
