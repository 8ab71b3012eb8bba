//go:build !unix

package node

import "os"

// allocatedBytes is the disk space fi's file takes, as far as its size tells.
func allocatedBytes(fi os.FileInfo) uint64 { return uint64(max(fi.Size(), 0)) }
