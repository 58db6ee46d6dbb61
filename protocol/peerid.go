package protocol

// A pxeswarm BitTorrent peer ID is a BEP 20 style client prefix and a role
// letter, then random characters. The image host's seeder is told apart by
// it (a machine rewrites its HaveAll and takes pieces only as it reveals
// them), and the tracker keeps a room's trades inside it by it. Anyone can
// put any ID in a handshake or an announce, so the role only steers whom a
// peer trades with; nothing trusts it for data.
const (
	PeerIDPrefix = "-PX0001-"
	// RoleSeeder marks the image host's seeder (pxeswarm serve, seed).
	RoleSeeder = 'S'
	// RoleMachine marks a machine that fetches (agent, fetch), also once
	// it has finished and seeds.
	RoleMachine = 'L'
)

// PeerRole returns the role letter of a pxeswarm peer ID (RoleSeeder or
// RoleMachine), or 0 for a foreign client.
func PeerRole(id [20]byte) byte {
	if string(id[:len(PeerIDPrefix)]) != PeerIDPrefix {
		return 0
	}
	return id[len(PeerIDPrefix)]
}
