package partition

// Unexported names the external tests (package partition_test) use.
const LoaderDevicePartUUID = loaderDevicePartUUID

var (
	ParseLoaderPartUUID = parseLoaderPartUUID
	SysPartitions       = sysPartitions
	LessName            = lessName
	DeletePartition     = deletePartition
)
