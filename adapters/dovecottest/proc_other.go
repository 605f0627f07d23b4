//go:build !unix

package dovecottest

import (
	"syscall"
	"time"
)

func procAttr() *syscall.SysProcAttr { return nil }

func killGroup(int) {}

func waitGroupGone(int, time.Duration) {}
