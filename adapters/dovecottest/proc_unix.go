//go:build unix

package dovecottest

import "syscall"

// procAttr puts the master into a process group of its own, so Stop can
// kill whatever children outlive it.
func procAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(a)
	return a
}

// killGroup kills the process group led by pid, which Start created.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}
