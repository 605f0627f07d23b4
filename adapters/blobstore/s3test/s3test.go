// Package s3test runs a real S3-compatible server for tests: SeaweedFS's
// weed, which .ci/prepare builds once into a cache outside the repository.
// One server is started per test binary, on free loopback ports in a
// temporary directory, with one access key; each test gets a bucket of its
// own. A package that uses it calls Stop from TestMain after m.Run.
//
// Like pgtest, a test that asks for a server fails, and does not skip, when
// weed is missing: CI must prove the S3 path.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/s3store"
)

// WeedVersion is the SeaweedFS module version .ci/prepare builds.
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// EnvWeed names a weed binary to use instead of the cached build.
const EnvWeed = "LEDGERDESK_WEED"

// startTimeout bounds the wait for the S3 port to answer (about 15 s on an
// idle 2-core machine; more while other tests run).
const startTimeout = 2 * time.Minute

// Server is a running weed with S3 on Endpoint.
type Server struct {
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	logMu  *sync.Mutex
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	errShared error
)

// Bin returns the weed binary: $LEDGERDESK_WEED, or the build .ci/prepare
// keeps under ${XDG_CACHE_HOME:-$HOME/.cache}/ledgerdesk/bin.
func Bin() (string, error) {
	if p := os.Getenv(EnvWeed); p != "" {
		return p, nil
	}
	dir := os.Getenv("LEDGERDESK_TOOLS_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("s3test: find the cache directory: %w", err)
		}
		dir = filepath.Join(cache, "ledgerdesk", "bin")
	}
	p := filepath.Join(dir, "weed-"+WeedVersion)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("s3test: weed not found at %s (run bash .ci/prepare, which builds it, or set %s): %w", p, EnvWeed, err)
	}
	return p, nil
}

// Shared returns the binary's one server, starting it on first use. Under
// go test -short it skips the test: -short means no external servers.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	if testing.Short() {
		tb.Skip("s3test: needs the SeaweedFS server, skipped with -short")
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && errShared == nil {
		shared, errShared = start()
	}
	if errShared != nil {
		tb.Fatalf("s3test: %v", errShared)
	}
	return shared
}

// Stop ends the shared server, if one was started, and removes its data.
func Stop() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
}

// NewBucket creates a fresh bucket on the shared server and returns the
// store configuration that reaches it (path-style, with the server's key).
func NewBucket(tb testing.TB) s3store.Config {
	tb.Helper()
	s := Shared(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg := s3store.Config{Endpoint: s.Endpoint, Bucket: "ldtest-" + hex.EncodeToString(b[:]), AccessKey: s.AccessKey,
		SecretKey: s.SecretKey, PathStyle: true, Region: "us-east-1"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(tb).MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("s3test: create bucket %s: %v", cfg.Bucket, err)
	}
	return cfg
}

// Client returns a client with the server's key, for a test's own checks.
func (s *Server) Client(tb testing.TB) *minio.Client {
	tb.Helper()
	c, err := s.client()
	if err != nil {
		tb.Fatalf("s3test: %v", err)
	}
	return c
}

func (s *Server) client() (*minio.Client, error) {
	return minio.New(s.Endpoint[len("http://"):], &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	out := make([]int, n)
	for i := range out {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out[i] = l.Addr().(*net.TCPAddr).Port
	}
	return out, nil
}

func start() (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // a port taken between picking and binding: pick again
		s, err := startOnce(bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startOnce(bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "ledgerdesk-weed-")
	if err != nil {
		return nil, err
	}
	var key [10]byte
	var secret [20]byte
	_, _ = rand.Read(key[:])
	_, _ = rand.Read(secret[:])
	s := &Server{AccessKey: "LD" + hex.EncodeToString(key[:]), SecretKey: hex.EncodeToString(secret[:]), dir: dir,
		exited: make(chan struct{}), log: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	conf, err := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "ledgerdesk-test",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}})
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(8)
	if err != nil {
		return nil, err
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.Endpoint = "http://127.0.0.1:" + p(0)
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "server", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-s3", "-s3.port="+p(0), "-s3.port.grpc="+p(1), "-s3.config="+confPath,
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-master.port="+p(2), "-master.port.grpc="+p(3), "-master.volumeSizeLimitMB=64",
		"-volume.port="+p(4), "-volume.port.grpc="+p(5), "-volume.max=0",
		"-filer.port="+p(6), "-filer.port.grpc="+p(7))
	s.cmd.Dir = dir
	w := &lockedWriter{mu: s.logMu, b: s.log}
	s.cmd.Stdout, s.cmd.Stderr = w, w
	// The kernel stops weed if the test binary dies without running Stop.
	s.cmd.SysProcAttr = procAttr()
	if err := s.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitReady waits until the S3 port answers a signed request.
func (s *Server) waitReady() error {
	c, err := s.client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.ListBuckets(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("weed exited before S3 answered:\n%s", s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("S3 at %s did not answer within %s: %w\n%s", s.Endpoint, startTimeout, err, s.logTail())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (s *Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	_ = os.RemoveAll(s.dir)
}

func (s *Server) logTail() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	b := s.log.Bytes()
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() > 1<<20 { // keep the tail only
		tail := append([]byte(nil), w.b.Bytes()[w.b.Len()-(256<<10):]...)
		w.b.Reset()
		w.b.Write(tail)
	}
	return w.b.Write(p)
}
