package imager

import (
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"golang.org/x/time/rate"
)

// Tuning holds the BitTorrent knobs pxeswarm sets for a LAN of up to a few
// hundred machines. The zero value means "use DefaultTuning"; see
// docs/SWARM.md for why each default is what it is.
type Tuning struct {
	// ChunkSize is the request size between peers. 16 KiB took 1.5× the
	// CPU time and 1.8–2.0× the wall time of 64 KiB on loopback
	// (BenchmarkChunkSize); chunks above 16 KiB work only between anacrolix
	// peers: Transmission 3 leaves larger requests unanswered and
	// libtorrent (qBittorrent) rejects them. Zero: 64 KiB for pxeswarm
	// images, falling to StockChunkSize for the rest of a fetch once a
	// stock client offers pieces (stock.go); 16 KiB from the start for
	// stock torrents (Image.Stock), which stock clients likely seed. A
	// size set here is kept whoever the peers are.
	ChunkSize int
	// MaxConns is the number of established peer connections per image.
	MaxConns int
	// MaxConnsPerHost caps the peer connections one address may hold
	// with this machine at once; further ones are closed as they are
	// accepted. A terminal runs one agent; a few more leave room for a
	// restarted one whose old connection is not closed yet. Zero: 4
	// (tracker.DefaultMaxPeersPerHost); negative: no cap (several peers
	// behind one address, as in tests that share 127.0.0.1).
	MaxConnsPerHost int
	// HalfOpen is the number of connection attempts in flight per image.
	HalfOpen int
	// PartnerRequests is the chunk requests a fetching machine keeps
	// outstanding with each other pxeswarm fetching machine (not the image
	// host, whose reveals already bound them, nor foreign clients).
	// anacrolix otherwise asks a peer for as many chunks as the peer
	// allows (hundreds), and moves them between peers by cancelling.
	PartnerRequests int
	// KeepAlive is the idle time before a keep-alive is sent. anacrolix
	// v1.61 has a lost wake-up in its peer writer (issue #1070) that stalls
	// transfers for 25–60 s; a keep-alive of about 3 s wakes the writer.
	KeepAlive time.Duration
	// RequestBuffer is the bytes of peer requests one connection may have
	// read from disk and queued for sending.
	RequestBuffer int
	// DialRate is the peer dials allowed per second (a LAN can take many).
	DialRate float64
	// HashWorkers verify received pieces in parallel; 0 means one per CPU.
	HashWorkers int
	// DownloadLimit and UploadLimit cap payload bytes per second for the
	// whole session; 0 means no limit (a LAN should be filled).
	DownloadLimit, UploadLimit int64
	// IPv6 and UTP are off on a LAN unless asked for: the Go uTP is slow,
	// and kernels without IPv6 make the client fail to start.
	IPv6, UTP bool
}

// DefaultTuning returns the LAN defaults.
func DefaultTuning() Tuning {
	return Tuning{
		ChunkSize:       64 << 10,
		MaxConns:        8,
		MaxConnsPerHost: 4,
		PartnerRequests: 1,
		HalfOpen:        30,
		KeepAlive:       3 * time.Second,
		RequestBuffer:   1 << 20,
		DialRate:        100,
		HashWorkers:     runtime.NumCPU(),
	}
}

// StockChunkSize is the request size every BitTorrent client answers
// (BEP 3's customary 16 KiB).
const StockChunkSize = 16 << 10

func (tu Tuning) withDefaults() Tuning {
	d := DefaultTuning()
	if tu.ChunkSize == 0 {
		tu.ChunkSize = d.ChunkSize
	}
	if tu.MaxConns == 0 {
		tu.MaxConns = d.MaxConns
	}
	if tu.MaxConnsPerHost == 0 {
		tu.MaxConnsPerHost = d.MaxConnsPerHost
	}
	if tu.PartnerRequests == 0 {
		tu.PartnerRequests = d.PartnerRequests
	}
	if tu.HalfOpen == 0 {
		tu.HalfOpen = d.HalfOpen
	}
	if tu.KeepAlive == 0 {
		tu.KeepAlive = d.KeepAlive
	}
	if tu.RequestBuffer == 0 {
		tu.RequestBuffer = d.RequestBuffer
	}
	if tu.DialRate == 0 {
		tu.DialRate = d.DialRate
	}
	if tu.HashWorkers == 0 {
		tu.HashWorkers = d.HashWorkers
	}
	return tu
}

// clientConfig builds the anacrolix configuration: no DHT, PEX, LSD,
// UPnP/NAT-PMP, webtorrent, header obfuscation, IPv6 or uTP; peers come
// from our tracker only.
func (tu Tuning) clientConfig(log *slog.Logger, st *Storage, listenHost string, sched *schedule, fromSeeders *atomic.Int64, sources *sourceMeter) *torrent.ClientConfig {
	cc := torrent.NewDefaultClientConfig()
	cc.DefaultStorage = st
	cc.Slogger = log
	// Upload whether or not it pays us back: without Seed a leecher sends
	// little more than it receives, and the swarm effect is gone.
	cc.Seed = true
	cc.NoDHT = true
	cc.DisablePEX = true
	cc.NoDefaultPortForwarding = true
	cc.DisableWebtorrent = true
	cc.DisableUTP = !tu.UTP
	cc.DisableIPv6 = !tu.IPv6
	cc.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{}
	// Unverified bytes in flight: the default 64 MiB is only a handful of
	// large pieces; no limit took an 8-leecher probe from 93 s to 40 s.
	cc.MaxUnverifiedBytes = 0
	cc.KeepAliveTimeout = tu.KeepAlive
	cc.MaxAllocPeerRequestDataPerConn = max(tu.RequestBuffer, tu.ChunkSize)
	// Two machines that both learn of each other from the tracker dial
	// each other; anacrolix keeps both connections unless told otherwise,
	// so 8 connections were only 4 partners, and a late joiner found
	// every slot of the machines that had data taken.
	cc.DropDuplicatePeerIds = true
	cc.EstablishedConnsPerTorrent = tu.MaxConns
	if sched != nil {
		cc.EstablishedConnsPerTorrent = seederConns
	}
	cc.HalfOpenConnsPerTorrent = tu.HalfOpen
	cc.TotalHalfOpenConns = 4 * tu.HalfOpen
	cc.TorrentPeersLowWater = tu.MaxConns
	cc.TorrentPeersHighWater = 8 * tu.MaxConns
	cc.NominalDialTimeout = 5 * time.Second
	cc.MinDialTimeout = 2 * time.Second
	cc.DialRateLimiter = rate.NewLimiter(rate.Limit(tu.DialRate), int(tu.DialRate))
	cc.PieceHashersPerTorrent = tu.HashWorkers
	cc.PeerID = newPeerID(sched != nil)
	if sched != nil {
		sched.callbacks(&cc.Callbacks)
	} else {
		leecherCallbacks(&cc.Callbacks, st.im.NumPieces())
		cc.Callbacks.ReadExtendedHandshake = capPartnerRequests(tu.PartnerRequests)
		cc.Callbacks.ReceivedUsefulData = append(cc.Callbacks.ReceivedUsefulData, func(e torrent.ReceivedUsefulDataEvent) {
			if sources.received(e) {
				fromSeeders.Add(int64(len(e.Message.Piece))) // a web seed or our seeder
			}
		})
	}
	// Peer sockets are ours (socket.go): anacrolix opens none.
	cc.DisableTCP = true
	if ip := net.ParseIP(listenHost); ip != nil && !ip.IsUnspecified() {
		local := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
		cc.TrackerDialContext = local.DialContext
	}
	if tu.DownloadLimit > 0 {
		cc.DownloadRateLimiter = rate.NewLimiter(rate.Limit(tu.DownloadLimit), max(int(tu.DownloadLimit/4), 2*tu.ChunkSize))
	}
	if tu.UploadLimit > 0 {
		cc.UploadRateLimiter = rate.NewLimiter(rate.Limit(tu.UploadLimit), max(int(tu.UploadLimit/4), cc.MaxAllocPeerRequestDataPerConn))
	}
	return cc
}

// seederConns is the connections a scheduled seeder keeps: one per
// leecher, for a room of up to this many, so it can hand each a piece.
const seederConns = 256

// capPartnerRequests holds a fetching machine to n outstanding chunk
// requests with each pxeswarm partner. anacrolix caps its requests to a
// peer at the reqq the peer advertises in its extended handshake; this
// callback runs before anacrolix reads that field, so lowering it there
// is our cap. With hundreds in flight per connection anacrolix rebalances
// by cancelling requests and re-issuing them to other peers, whatever of
// them was on the wire arriving twice. On the bench LAN one request per
// partner took N=16 from 1.29–1.35× to 1.14–1.16× the floor; on slow
// machines it moves load to the image host (docs/SWARM.md has both).
//
// Transmission (3.00 seen; the same test is in 4.0's peer-msgs) takes one
// request fewer than the reqq it advertises: with reqq requests pending it
// rejects the next, and anacrolix, which adds no requests after a reject
// until the peer unchokes it again, then waits for ever on an unchoked
// peer. A fetch from a Transmission seeder stopped after 1022 chunks
// (two rounds of 511) whatever the chunk and piece size. One fewer keeps
// us inside what it really takes.
func capPartnerRequests(n int) func(*torrent.PeerConn, *pp.ExtendedHandshakeMessage) {
	return func(pc *torrent.PeerConn, hs *pp.ExtendedHandshakeMessage) {
		switch {
		case isPartner(pc.PeerID):
			hs.Reqq = n
		case isTransmission(pc.PeerID) && hs.Reqq > 1:
			hs.Reqq--
		}
	}
}

// isTransmission says whether id is a Transmission client's ("-TRxyzw-").
func isTransmission(id torrent.PeerID) bool {
	return string(id[:3]) == "-TR" && id[7] == '-'
}
