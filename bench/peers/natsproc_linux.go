package peers

import "syscall"

// childProcAttr puts a NATS server process in a process group of its own and has Linux stop
// it with SIGTERM when peerbench dies without stopping it (SIGKILL, a crash).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
