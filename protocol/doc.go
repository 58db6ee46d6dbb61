// Package protocol is what the terminal agent and the image host say to
// each other, and nothing else: the signed plan (with its action and its
// target), the agent's reports and phases, the task states they move,
// MAC addresses, and the DHCP constants by which an agent finds its
// server.
//
// Both sides import it; it imports nothing of either. It owns the rules
// of every field that crosses the wire: a plan or report that does not
// pass its Check is refused on both ends. It does not own how plans are
// served or tasks stored (package pxe), how a target is found on a
// machine (package partition), or what the agent does with a plan
// (package initramfs).
//
// Files, in the order a terminal meets them:
//   - discovery.go: the DHCP option and vendor class of the server URL;
//   - mac.go: machine identity;
//   - plan.go, target.go: the signed plan, its action and its target;
//   - report.go: phases, reports, and the task states they drive;
//   - inventory.go: the machine's hardware, sent in a report;
//   - capture.go: a capture's manifest (the disk's layout and the extents
//     sent), its states, and the upload offset header.
package protocol
