//go:build !linux

package imager

func setNotSentLowat(uintptr) {}
