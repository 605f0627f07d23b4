package api

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// bigMail has an attachment of n bytes.
func bigMail(messageID string, n int) []byte {
	data := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	return []byte(strings.Join([]string{
		"From: big@example.org", "To: support@example.org", "Subject: scan", "Message-ID: <" + messageID + ">",
		"MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="b"`, "",
		"--b", "Content-Type: text/plain", "", "the scan", "--b",
		"Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
		`Content-Disposition: attachment; filename="scan.bin"`, "",
		wrap76(base64.StdEncoding.EncodeToString(data)), "--b--", "",
	}, "\r\n"))
}

// The server's WriteTimeout bounds every response (serve sets one); a
// download to a slow client takes longer and must not be cut off by it.
func TestDownloads_OutlastTheServersWriteTimeout(t *testing.T) {
	t.Parallel()
	var opts *Options
	e := newEnv(t, backend{"embedded", openEmbedded}, func(o *Options, _ projections.Reader) { opts = o })
	raw := bigMail(uniq("big")+"@example.org", 12<<20)
	m := e.seedMail(t, raw)
	// the ticket view has the article before the slow server is asked
	e.mustJSON(t, http.MethodGet, m.path("/attachments"), e.tokens[domain.RoleAgent], nil, http.StatusOK, nil)

	const writeTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: New(*opts), WriteTimeout: writeTimeout, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	for _, suffix := range []string{"/eml", "/attachments/1"} {
		req, err := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+m.path(suffix), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens[domain.RoleAgent])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", suffix, err)
		}
		// a client that reads slowly: the whole download takes several
		// write timeouts
		var got bytes.Buffer
		buf := make([]byte, 64<<10)
		start := time.Now()
		for {
			n, err := resp.Body.Read(buf)
			got.Write(buf[:n])
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("GET %s: broken off after %d bytes and %v: %v", suffix, got.Len(), time.Since(start), err)
				break
			}
			time.Sleep(3 * time.Millisecond)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || got.Len() < 12<<20 {
			t.Errorf("GET %s = %d, %d bytes in %v; want all of it", suffix, resp.StatusCode, got.Len(), time.Since(start))
		}
	}
}
