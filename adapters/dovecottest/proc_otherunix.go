//go:build unix && !linux

package dovecottest

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
