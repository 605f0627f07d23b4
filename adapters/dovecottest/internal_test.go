package dovecottest

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// fakeTB records Skip and Fatal instead of ending the test; both stop the
// caller by panicking with stopped, as runtime.Goexit would.
type fakeTB struct {
	testing.TB
	skipped, fatal bool
	msg            string
}

type stopped struct{}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, args[0].(string)
	panic(stopped{})
}

func (f *fakeTB) Fatal(args ...any) {
	f.fatal, f.msg = true, args[0].(string)
	panic(stopped{})
}

func runStart(tb *fakeTB) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(stopped); !ok {
				panic(r)
			}
		}
	}()
	Start(tb)
}

// Not parallel: these replace package seams, and parallel tests start only
// after the sequential ones are done.
func TestStart_WithoutDovecot(t *testing.T) {
	if testing.Short() {
		t.Skip("Start always skips with -short")
	}
	saved := lookupDovecot
	t.Cleanup(func() { lookupDovecot = saved })
	lookupDovecot = func() string { return "" }
	tests := []struct {
		name      string
		ci        string
		wantFatal bool
	}{
		{"outside CI the test is skipped", "", false},
		{"in CI the test fails", "true", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvCI, tc.ci)
			f := &fakeTB{TB: t}
			runStart(f)
			if f.fatal != tc.wantFatal || f.skipped == tc.wantFatal {
				t.Errorf("fatal=%v skipped=%v, want fatal=%v", f.fatal, f.skipped, tc.wantFatal)
			}
			if want := ".ci/prepare"; !strings.Contains(f.msg, want) {
				t.Errorf("message %q does not mention %s", f.msg, want)
			}
		})
	}
}

func TestStart_RetriesWhenAPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = taken.Close() }()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	saved := pickPorts
	t.Cleanup(func() { pickPorts = saved })
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := saved(n)
		if calls == 1 && err == nil {
			ports[0] = takenPort
		}
		return ports, err
	}
	s := Start(t)
	if calls < 2 {
		t.Errorf("ports picked %d times, want a retry", calls)
	}
	if s.IMAPAddr == net.JoinHostPort("127.0.0.1", strconv.Itoa(takenPort)) {
		t.Errorf("IMAPAddr = %s, the taken port", s.IMAPAddr)
	}
	c, err := net.Dial("tcp", s.IMAPAddr)
	if err != nil {
		t.Fatalf("dial %s: %v", s.IMAPAddr, err)
	}
	_ = c.Close()
}
