//go:build !linux

package s3test

import "syscall"

// procAttr: only Linux can tie weed's life to the test binary's; elsewhere
// Stop must run.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
