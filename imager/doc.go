// Package imager is the swarm engine of pxeswarm: it turns partition images
// into BitTorrent v1 torrents, and seeds or fetches them straight to and from
// block devices, partitions or files, with no temporary copy.
//
// It owns:
//   - image torrents ([Create], [Load]): parallel hashing, large pieces, one
//     torrent "file" per partition, and the partition layout recorded inside
//     the info dictionary so the info-hash covers it;
//   - the storage that reads and writes pieces by offset on the targets
//     ([NewStorage]), with piece completion kept in memory and saved for resume;
//   - the check modes (trusted seed, fresh target, verify);
//   - what becomes of a used-block part's gaps once its extents are
//     written ([FinishGaps]: zero gaps zeroed, free gaps left or
//     discarded), the device calls being package blockdev's;
//   - seeding and fetching with LAN settings ([Config.Join], [Session]) and
//     the [Progress] that the agent, server and CLI share.
//
// It does not own peer discovery (package tracker), disk discovery and
// partition tables (package partition), or anything about booting.
package imager
