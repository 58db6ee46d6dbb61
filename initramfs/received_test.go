package initramfs

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// TestReceivedOf: a report carries the swarm's largest sources, at most
// protocol.MaxReportSources, the image hosts as protocol.SourceServer, and
// drops what a report cannot name; the result always passes Check.
func TestReceivedOf(t *testing.T) {
	var srcs []imager.Source // largest first, as Progress has them
	srcs = append(srcs, imager.Source{Addr: imager.ServerSource, Bytes: 100 << 20})
	srcs = append(srcs, imager.Source{Addr: "[fe80::1%eth0]:6881", Bytes: 90 << 20}) // a zone: not nameable
	srcs = append(srcs, imager.Source{Addr: "?", Bytes: 80 << 20})
	for i := range 20 {
		srcs = append(srcs, imager.Source{Addr: fmt.Sprintf("198.18.1.%d:6881", i+1), Bytes: int64(40-i) << 20})
	}
	srcs = append(srcs, imager.Source{Addr: "198.18.2.1:6881", Bytes: 0})
	got := receivedOf(srcs)
	want := []protocol.Received{{From: protocol.SourceServer, Bytes: 100 << 20}}
	for i := range protocol.MaxReportSources - 1 {
		want = append(want, protocol.Received{From: fmt.Sprintf("198.18.1.%d:6881", i+1), Bytes: int64(40-i) << 20})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("receivedOf (-want +got):\n%s", diff)
	}
	r := protocol.Report{Phase: protocol.PhaseImaging, Received: got}
	if err := r.Check(); err != nil {
		t.Errorf("a report with receivedOf's sources: Check() = %v", err)
	}
}
