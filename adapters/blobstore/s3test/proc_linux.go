package s3test

import "syscall"

// procAttr has the kernel stop weed if the test binary dies without
// running Stop.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
