package partition_test

import (
	"testing"

	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// TestSelectorMirrorsPlanTarget: a plan's target converts to a Selector
// as is; this stops compiling if the two drift apart.
func TestSelectorMirrorsPlanTarget(t *testing.T) {
	in := pxe.Target{Disk: "nvme0n1", Partition: 2}
	got := partition.Selector(in)
	if want := (partition.Selector{Disk: "nvme0n1", Partition: 2}); got != want {
		t.Errorf("partition.Selector(%+v) = %+v, want %+v", in, got, want)
	}
}
