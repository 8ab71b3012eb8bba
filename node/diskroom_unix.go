//go:build unix

package node

import (
	"os"
	"syscall"
)

// allocatedBytes is the disk space fi's file takes: its allocated blocks, which a preallocated
// file holds past its size.
func allocatedBytes(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Blocks) * 512
	}
	return uint64(max(fi.Size(), 0))
}
