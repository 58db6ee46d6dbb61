package dhcp

import "strconv"

// Client architecture types (option 93), RFC 4578 §2.1 and IANA's
// "Processor Architecture Types" registry.
const (
	archBIOS = 0 // x86 BIOS (legacy PXE ROM)
	// 6 is 32-bit x86 UEFI: not served.
	archUEFIx64 = 7 // x64 UEFI: what OVMF and nearly all real x86-64 firmware send
	// 9 was "EFI x86-64" in RFC 4578 before erratum 4624 swapped 7 and
	// 9 (now "EBC"); some older x86-64 firmware still sends 9.
	archUEFIx64Old = 9
	// 10/11 are ARM UEFI: not served.
	// archUEFIx64HTTP is x64 UEFI HTTP boot (UEFI 2.5 §24.7): the
	// firmware sends vendor class "HTTPClient:Arch:00016…" and wants a
	// URL as its boot file.
	archUEFIx64HTTP = 16
)

// ArchName names an RFC 4578 option 93 client architecture for people
// (for example "bios" or "efi-x86_64"). The server records it with each
// machine it sees (Config.OnBoot passes the raw value), and the status
// API shows it; 0xffff (no option 93) and unlisted values read
// "arch-<n>".
func ArchName(arch uint16) string {
	switch arch {
	case archBIOS:
		return "bios"
	case 6:
		return "efi-ia32"
	case archUEFIx64, archUEFIx64Old:
		return "efi-x86_64"
	case 10:
		return "efi-arm32"
	case 11:
		return "efi-arm64"
	case archUEFIx64HTTP:
		return "efi-x86_64-http"
	}
	return "arch-" + strconv.Itoa(int(arch))
}
