// Package version says which pxeswarm this is, from the Go build info.
// Server, agent and CLI print it; it owns nothing else.
package version

import "runtime/debug"

// String is pxeswarm's module version from the build info, "devel-<commit>"
// for a build from a checkout, or "devel".
func String() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		if ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					return "devel-" + s.Value[:12]
				}
			}
		}
		return "devel"
	}
	return bi.Main.Version
}
