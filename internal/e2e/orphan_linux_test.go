package e2e

import (
	"os/exec"
	"syscall"
)

// killWithTest makes the kernel kill cmd's process when the test process dies, so that a
// test binary ended by go test's timeout (which runs no cleanups) leaves no server running,
// stopped ones (SIGSTOP) included.
func killWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
