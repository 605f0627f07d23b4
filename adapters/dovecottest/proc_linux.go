package dovecottest

import "syscall"

// setParentDeathSignal makes the kernel stop the master if the test binary
// dies without running its cleanups.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGTERM }
