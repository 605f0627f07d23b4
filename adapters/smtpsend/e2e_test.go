package smtpsend_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// buildBinaries builds `ledgerdesk` and the smtpsink test server once.
var (
	buildOnce           sync.Once
	ledgerdeskBin, sink string
	errBuild            error
)

func binaries(tb testing.TB) (string, string) {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ledgerdesk-e2e-")
		if err != nil {
			errBuild = err
			return
		}
		ledgerdeskBin, sink = filepath.Join(dir, "ledgerdesk"), filepath.Join(dir, "smtpsink")
		for bin, pkg := range map[string]string{ledgerdeskBin: "github.com/ledgerdesk/ledgerdesk/cmd/ledgerdesk",
			sink: "github.com/ledgerdesk/ledgerdesk/adapters/smtpsend/internal/smtpsink"} {
			if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
				errBuild = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
				return
			}
		}
	})
	if errBuild != nil {
		tb.Fatal(errBuild)
	}
	return ledgerdeskBin, sink
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startSink runs the SMTP sink as a child process storing into dir.
func startSink(t *testing.T, bin, dir, user, pass string) (host string, port int) {
	t.Helper()
	cmd := exec.Command(bin, "-dir", dir, "-user", user, "-pass", pass)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("smtpsink: %v", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("smtpsink said %q", line)
	}
	port, _ = strconv.Atoi(p)
	return h, port
}

const e2eToken = "e2e-admin-token-0123456789abcdef"

type apiClient struct {
	t    *testing.T
	base string
}

func (a apiClient) call(method, path string, body any, out any) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, r)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		a.t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

func sinkFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitFor(t *testing.T, what string, d time.Duration, log fmt.Stringer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; serve log tail:\n%s", what, tailOf(log.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestEndToEnd_AutoReplyAndAnswer is the new user's path: configure an
// outgoing account and an auto-reply template through the API, send a mail
// into the mailbox (a real Dovecot), receive the auto-reply with the ticket
// number at a real SMTP server process, answer it, and see the answer
// appended to the same ticket. The sent auto-reply is also copied to the
// IMAP Sent folder.
func TestEndToEnd_AutoReplyAndAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with child processes and Dovecot")
	}
	t.Parallel()
	ledgerdesk, sinkBin := binaries(t)
	dv := dovecottest.Start(t)
	dv.AddUser(t, "support", "s3cret")
	dv.CreateFolder(t, "support", "Sent")
	sinkDir := t.TempDir()
	smtpHost, smtpPort := startSink(t, sinkBin, sinkDir, "desk", "smtp-pw")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	_ = ln.Close()
	serveLog := &lockedBuffer{}
	serve := exec.Command(ledgerdesk, "serve")
	serve.Env = append(os.Environ(), "LEDGERDESK_HTTP_ADDR="+httpAddr, "LEDGERDESK_DATA_DIR="+t.TempDir(),
		"LEDGERDESK_ADMIN_TOKEN="+e2eToken, "LEDGERDESK_LOG_FORMAT=json")
	serve.Stdout, serve.Stderr = serveLog, serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = serve.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = serve.Process.Kill()
			<-done
		}
	})
	api := apiClient{t: t, base: "http://" + httpAddr + "/api/v1"}
	waitFor(t, "serve to be ready", 60*time.Second, serveLog, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// given an auto-reply template, a mailbox and an outgoing account, all through the API
	api.call(http.MethodPut, "/templates/welcome", map[string]any{"subject": "{{.Subject}}",
		"body": "Hallo {{.RequesterName}},\nwir haben Ihre Nachricht als Ticket {{.TicketNumber}} erfasst.\n{{.SenderName}}"}, nil)
	imapHost, imapPortS, _ := net.SplitHostPort(dv.IMAPAddr)
	imapPort, _ := strconv.Atoi(imapPortS)
	var inbound struct {
		ID string `json:"id"`
	}
	// STARTTLS trusting Dovecot's certificate through the account's extra CA
	// only: the copy to Sent must log in the way the fetcher does.
	api.call(http.MethodPost, "/inbound-accounts", map[string]any{"name": "support", "protocol": "imap", "host": imapHost, "port": imapPort,
		"security": "starttls", "ca_cert_pem": string(dv.CACertPEM), "prevent_plain_login": true, "username": "support", "password": "s3cret", "poll_interval_seconds": 1, "after_import": "delete", "enabled": true,
		"account_address": "support@example.org", "sender_address": "support@example.org", "sender_name": "Support",
		"auto_reply_template": "welcome"}, &inbound)
	api.call(http.MethodPost, "/outbound-accounts", map[string]any{"name": "sink", "host": smtpHost, "port": smtpPort, "security": "none",
		"auth": "cram-md5", "username": "desk", "password": "smtp-pw", "sender_address": "support@example.org", "sender_name": "Support",
		"max_mail_size": 1 << 20, "sent_folder_account_id": inbound.ID, "sent_folder": "Sent"}, nil)

	// when a customer writes to the mailbox
	dv.Deliver(t, "support", []byte("From: Erika Muster <erika@customer.example>\r\nTo: support@example.org\r\n"+
		"Subject: Drucker streikt\r\nMessage-ID: <e2e-1@customer.example>\r\nReferences: <e2e-0@customer.example>\r\n"+
		"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nDer Drucker im 2. OG druckt nicht.\r\n"))

	// then the SMTP server process receives one auto-reply, threaded, with the ticket number
	waitFor(t, "the auto-reply", 90*time.Second, serveLog, func() bool { return len(sinkFiles(t, sinkDir)) >= 1 })
	raw, err := os.ReadFile(sinkFiles(t, sinkDir)[0])
	if err != nil {
		t.Fatal(err)
	}
	r, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := r.Header.Subject()
	irt, _ := r.Header.MsgIDList("In-Reply-To")
	refs, _ := r.Header.MsgIDList("References")
	mid, _ := r.Header.MessageID()
	part, err := r.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(part.Body)
	// without the server's key the id is recognised by its form only
	ownID, own := domain.ParseOwnMessageID(mid, domain.MessageIDKey{})
	ticketID := ownID.TicketID
	checks := map[string]bool{
		"subject carries the reference":           subject == "[Ticket#1001] Drucker streikt",
		"In-Reply-To is the customer's mail":      len(irt) == 1 && irt[0] == "e2e-1@customer.example",
		"References thread the customer's chain":  strings.Join(refs, " ") == "e2e-0@customer.example e2e-1@customer.example",
		"Message-ID is ours and names the ticket": own && ticketID != "",
		"body names ticket and requester":         strings.Contains(string(body), "Ticket 1001") && strings.Contains(string(body), "Erika Muster"),
		"marked automatic":                        r.Header.Get("Auto-Submitted") == "auto-replied" && r.Header.Get("X-Auto-Response-Suppress") == "All",
		"envelope to the customer":                r.Header.Get("X-Sink-Rcpt-To") == "erika@customer.example",
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("auto-reply: %s: no\n%s", what, raw)
		}
	}
	waitFor(t, "the copy in the Sent folder", 30*time.Second, serveLog, func() bool { return dv.FolderCount(t, "support", "Sent") == 1 })

	// when the customer answers the auto-reply
	dv.Deliver(t, "support", []byte("From: Erika Muster <erika@customer.example>\r\nTo: support@example.org\r\n"+
		"Subject: Re: "+subject+"\r\nMessage-ID: <e2e-2@customer.example>\r\nIn-Reply-To: <"+mid+">\r\n"+
		"References: <e2e-1@customer.example> <"+mid+">\r\nDate: Mon, 23 Nov 2026 10:05:00 +0000\r\n\r\nEr druckt wieder, danke.\r\n"))

	// then the answer is appended to the same ticket, and nobody gets another auto-reply
	waitFor(t, "the answer on the ticket", 90*time.Second, serveLog, func() bool {
		var page struct {
			Items []struct {
				Payload struct {
					TicketID  string `json:"ticket_id"`
					MessageID string `json:"message_id"`
				} `json:"payload"`
			} `json:"items"`
		}
		api.call(http.MethodGet, "/events?type=MailAppended&limit=100", nil, &page)
		for _, it := range page.Items {
			if it.Payload.TicketID == ticketID && it.Payload.MessageID == "e2e-2@customer.example" {
				return true
			}
		}
		return false
	})
	time.Sleep(2 * time.Second)
	if n := len(sinkFiles(t, sinkDir)); n != 1 {
		t.Errorf("the SMTP server received %d mails, want only the one auto-reply", n)
	}
}
