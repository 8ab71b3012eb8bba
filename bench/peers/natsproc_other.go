//go:build !linux

package peers

import "syscall"

// childProcAttr puts a NATS server process in a process group of its own.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
