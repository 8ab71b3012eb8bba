//go:build unix

package testaddr

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// reserve takes port for the rest of this process, across the test binaries
// of one machine: an exclusive flock on a file named after the port in
// $TMPDIR/shoal-testaddr, held until the process exits (the kernel drops the
// lock then, however it ends). It reports false when another process holds
// the port; when the lock file cannot be used at all it reserves nothing and
// reports true, as before there was a reservation.
func reserve(port int) bool {
	dir := filepath.Join(os.TempDir(), "shoal-testaddr")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	reserved = append(reserved, f) // kept open: closing it would release the lock
	return true
}

// reserved are the lock files of the ports this process reserved (under handedMu).
var reserved []*os.File
