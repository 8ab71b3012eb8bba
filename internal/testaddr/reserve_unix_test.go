//go:build unix

package testaddr

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// A port reserved here is refused to every other open of its lock file, which is what
// another test binary does (flock locks belong to an open file, not to a process).
func TestReserveExcludesOtherOpens(t *testing.T) {
	port := Ports(t, 1)[0]
	if reserve(port) {
		t.Fatalf("port %d reserved twice", port)
	}
	f, err := os.Open(filepath.Join(os.TempDir(), "shoal-testaddr", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		t.Fatalf("another open of port %d's lock file took the lock", port)
	}
}
