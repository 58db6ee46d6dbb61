// Package dhcp is the boot server's DHCPv4 service. Config.Start serves it;
// package pxe composes it with TFTP and HTTP (Site.Start, `pxeswarm serve`).
//
// It owns:
//   - full mode: addresses from our own pool, reservations, and the lease
//     file that keeps leases across restarts (RFC 2131);
//   - PXE 2.1 proxyDHCP beside the school's DHCP server: the boot file and
//     server URL, never an address, also on port 4011;
//   - the boot file choice by client architecture (option 93, RFC 4578),
//     or the iPXE script URL for iPXE, and ArchName for people;
//   - the server URL in the URL option (224 by default, protocol.URLOption)
//     in every OFFER and ACK;
//   - the socket: UDP bound to the classroom interface (SO_BINDTODEVICE),
//     allowed to broadcast, Linux only.
//
// It does not own which machine has a task: it asks the Config.Boot
// callback and reports each boot through Config.OnBoot. It does not serve
// TFTP or HTTP (package pxe), and it is not the agent's DHCP client
// (package initramfs/dhclient); both sides share only the constants in
// package protocol.
//
// Files:
//   - dhcp.go: Config, the Handler and its chain of steps, Start;
//   - arch.go: option 93 architecture types and their names;
//   - leases.go: the full-mode address book and its lease file;
//   - listen_linux.go, listen_other.go: the socket.
package dhcp
