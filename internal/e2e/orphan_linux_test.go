package e2e

import (
	"os/exec"
	"syscall"
)

// killWithTest makes the kernel kill cmd's process when the test process dies, so that a
// test binary ended by go test's timeout (which runs no cleanups) leaves no server running,
// stopped ones (SIGSTOP) included. (The signal comes when the OS thread that started the
// process ends, which in a Go program is when the process does: the runtime keeps its threads,
// but for goroutines that lock one and exit, which these tests do not start processes from.)
func killWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
