package imager

import "errors"

// Sentinel errors that callers branch on. Every error that carries one of
// these also says what to do next.
var (
	// ErrBadTorrent: the torrent file is truncated, not bencode, or not an
	// image torrent this engine can write.
	ErrBadTorrent = errors.New("bad image torrent")
	// ErrTooSmall: a target holds fewer bytes than its image part.
	ErrTooSmall = errors.New("target too small")
	// ErrTargets: the number of targets does not match the image's parts.
	ErrTargets = errors.New("wrong number of targets")
	// ErrMismatch: sources do not hold the data their torrent was made
	// from (SpotCheck).
	ErrMismatch = errors.New("sources do not match the torrent")
	// ErrBadState: a saved resume state does not belong to this image.
	ErrBadState = errors.New("bad resume state")
	// ErrWrite: a target refused a write (a failing disk, a full file
	// system, a device that went away). The session fails at once.
	ErrWrite = errors.New("write to the target failed")
)
