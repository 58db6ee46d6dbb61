package qemu

import (
	"fmt"
	"os"
)

// LocalDiskMarker is what the boot sector written by WriteLocalDisk prints.
const LocalDiskMarker = "pxeswarm-test: local disk booted"

// WriteLocalDisk writes a size-byte raw disk whose MBR boot sector prints
// LocalDiskMarker on the first serial port and halts. A BIOS machine that is
// sent to "boot the local disk" proves it got there by printing it.
func WriteLocalDisk(path string, size int64) error {
	// 16-bit real mode, loaded at 0x7c00:
	//   cli; xor ax,ax; mov ds,ax; cld; mov si,msg; mov dx,0x3f8
	//   next: lodsb; test al,al; jz stop; out dx,al; jmp next
	//   stop: hlt; jmp stop
	code := []byte{
		0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xFC,
		0xBE, 0x1A, 0x7C, // mov si, 0x7c1a (msg below)
		0xBA, 0xF8, 0x03, // mov dx, 0x3f8 (COM1 data port)
		0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,
		0xF4, 0xEB, 0xFD,
		0x90, 0x90, 0x90,
	}
	sector := make([]byte, 512)
	copy(sector, code)
	copy(sector[0x1a:], "\r\n"+LocalDiskMarker+"\r\n\x00")
	sector[510], sector[511] = 0x55, 0xAA
	if size < 512 {
		return fmt.Errorf("local disk %s: size %d is smaller than one sector", path, size)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(sector); err != nil {
		f.Close()
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
