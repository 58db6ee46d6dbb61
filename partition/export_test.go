package partition

import "github.com/pxeswarm/pxeswarm/partition/blockdev"

// Unexported names the external tests (package partition_test) use.
const LoaderDevicePartUUID = loaderDevicePartUUID

var (
	ParseLoaderPartUUID = parseLoaderPartUUID
	SysPartitions       = sysPartitions
	LessName            = lessName
	DeletePartition     = blockdev.DeletePartition
)
