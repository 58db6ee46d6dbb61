package protocol

// How an agent finds its server through DHCP.
const (
	// URLOption is the DHCP option that carries the server's URL as text
	// (for example "http://198.18.0.1:8080/"): the first of the
	// site-specific options 224–254 (RFC 2132 §1, RFC 3942). The agent
	// reads only this code; a server set to send another one leaves the
	// agent to the kernel command line.
	URLOption uint8 = 224
	// AgentVendorClass is the vendor class (option 60) our agent sends.
	// proxyDHCP answers any vendor class starting with "pxeswarm", so the
	// agent learns the server URL although its address came from the
	// school's server.
	AgentVendorClass = "pxeswarm-agent"
)
