package imapsource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

func mustNew(tb testing.TB, cfg Config) *Fetcher {
	tb.Helper()
	f, err := New(cfg, nil)
	if err != nil {
		tb.Fatalf("New() error = %v", err)
	}
	return f
}

func mustPoll(tb testing.TB, f *Fetcher, sink mailsource.Sink) mailsource.PollResult {
	tb.Helper()
	res, err := f.Poll(context.Background(), sink)
	if err != nil {
		tb.Fatalf("Poll() error = %v", err)
	}
	return res
}

func keysFor(folder string, uidValidity uint32, uids ...imap.UID) []string {
	out := make([]string, len(uids))
	for i, u := range uids {
		out[i] = SourceKey(folder, uidValidity, u)
	}
	slices.Sort(out)
	return out
}

func uidValidity(tb testing.TB, ts *testServer, folder string) uint32 {
	tb.Helper()
	st, err := ts.user.Status(folder, &imap.StatusOptions{UIDValidity: true})
	if err != nil {
		tb.Fatalf("status %s: %v", folder, err)
	}
	return st.UIDValidity
}

func TestPoll_delete(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMails(7, "delete")...)
	cfg := ts.config(t)
	cfg.BatchSize = 3
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 7, Deleted: 7}, res); diff != "" {
		t.Errorf("Poll() result (-want +got):\n%s", diff)
	}
	uv := uidValidity(t, ts, "INBOX")
	if diff := cmp.Diff(keysFor("INBOX", uv, 1, 2, 3, 4, 5, 6, 7), sink.keys(mailsource.StatusReceived)); diff != "" {
		t.Errorf("committed keys (-want +got):\n%s", diff)
	}
	if got := string(sink.bodies[SourceKey("INBOX", uv, 3)]); got != string(testMail("delete 3")) {
		t.Errorf("body of uid 3 = %q, want %q", got, testMail("delete 3"))
	}
	for key, body := range sink.bodies {
		if sink.sizes[key] != int64(len(body)) {
			t.Errorf("Receive(%s) got size %d, want %d", key, sink.sizes[key], len(body))
		}
	}
	if got := ts.count(t, "INBOX"); got != 0 {
		t.Errorf("INBOX holds %d mails after import, want 0", got)
	}
	if sink.commits != 3 {
		t.Errorf("commits = %d, want 3 (batches of 3 over 7 mails)", sink.commits)
	}
	for _, c := range ts.commands() {
		if c == "EXPUNGE" {
			t.Errorf("plain EXPUNGE sent: %q", ts.commands())
		}
		if strings.HasPrefix(c, "FETCH") || strings.HasPrefix(c, "STORE") || strings.HasPrefix(c, "SEARCH") {
			t.Errorf("command by sequence number sent: %q", c)
		}
		if strings.Contains(c, "BODY[]") {
			t.Errorf("BODY[] without PEEK sent: %q", c)
		}
	}

	res = mustPoll(t, f, sink)
	if diff := cmp.Diff(mailsource.PollResult{}, res); diff != "" {
		t.Errorf("second Poll() result (-want +got):\n%s", diff)
	}
}

func TestPoll_keepImportsOnceAcrossPolls(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMails(3, "keep")...)
	cfg := ts.config(t)
	cfg.AfterImport = mailsource.AfterImportKeep
	f := mustNew(t, cfg)
	sink := newFakeSink()

	first := mustPoll(t, f, sink)
	ts.deliver(t, "INBOX", testMail("keep 4"))
	second := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 3}, first); diff != "" {
		t.Errorf("first Poll() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 1}, second); diff != "" {
		t.Errorf("second Poll() (-want +got):\n%s", diff)
	}
	if got := len(sink.received); got != 4 {
		t.Errorf("sink received %d mails, want 4: %q", got, sink.received)
	}
	if got := ts.count(t, "INBOX"); got != 4 {
		t.Errorf("INBOX holds %d mails, want 4 (keep)", got)
	}
	for _, c := range ts.commands() {
		if strings.Contains(c, "STORE") || strings.Contains(c, "EXPUNGE") || strings.Contains(c, "MOVE") {
			t.Errorf("keep mode changed the server: %q", c)
		}
	}
}

func TestPoll_moveCreatesTheFolder(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMails(4, "move")...)
	cfg := ts.config(t)
	cfg.AfterImport = mailsource.AfterImportMove
	cfg.MoveFolder = "Processed/Helpdesk"
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 4, Deleted: 4}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	if got := ts.count(t, "INBOX"); got != 0 {
		t.Errorf("INBOX holds %d, want 0", got)
	}
	if got := ts.count(t, "Processed/Helpdesk"); got != 4 {
		t.Errorf("Processed/Helpdesk holds %d, want 4", got)
	}
}

func TestPoll_unparseableMailGoesToTheErrorFolder(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMail("good 1"), testMail("GARBAGE 2"), testMail("good 3"))
	f := mustNew(t, ts.config(t))
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 2, Failed: 1, Deleted: 3}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	uv := uidValidity(t, ts, "INBOX")
	if diff := cmp.Diff(keysFor("INBOX", uv, 2), sink.keys(mailsource.StatusFailed)); diff != "" {
		t.Errorf("failed keys (-want +got):\n%s", diff)
	}
	if got := ts.count(t, DefaultErrorFolder); got != 1 {
		t.Errorf("%q holds %d, want 1 (created by the fetcher)", DefaultErrorFolder, got)
	}
	if got := ts.count(t, "INBOX"); got != 0 {
		t.Errorf("INBOX holds %d, want 0", got)
	}
	// The failed mail never comes back: the next poll does nothing.
	if diff := cmp.Diff(mailsource.PollResult{}, mustPoll(t, f, sink)); diff != "" {
		t.Errorf("second Poll() (-want +got):\n%s", diff)
	}
}

func TestPoll_nonASCIIFolderNames(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{preCreate: []string{"Posteingang/Büro"}})
	ts.deliver(t, "Posteingang/Büro", testMail("good 1"), testMail("GARBAGE 2"))
	cfg := ts.config(t)
	cfg.Folders = []string{"Posteingang/Büro"}
	cfg.ErrorFolder = "Fehler/Ungültig"
	cfg.AfterImport = mailsource.AfterImportMove
	cfg.MoveFolder = "Erledigt/März"
	f := mustNew(t, cfg)

	res := mustPoll(t, f, newFakeSink())

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 1, Failed: 1, Deleted: 2}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	for folder, want := range map[string]int{"Posteingang/Büro": 0, "Erledigt/März": 1, "Fehler/Ungültig": 1} {
		if got := ts.count(t, folder); got != want {
			t.Errorf("%s holds %d, want %d", folder, got, want)
		}
	}
}

func TestPoll_oversizeIsNotDownloaded(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{preCreate: []string{DefaultErrorFolder}})
	big := testMail("big " + strings.Repeat("x", 4000))
	ts.deliver(t, "INBOX", testMail("small 1"), big, testMail("small 3"))
	cfg := ts.config(t)
	cfg.MaxMailSize = 1000
	cfg.AfterImport = mailsource.AfterImportKeep // failed mail moves even in keep mode
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 2, Oversize: 1, Deleted: 1}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	uv := uidValidity(t, ts, "INBOX")
	bigKey := SourceKey("INBOX", uv, 2)
	if slices.Contains(sink.received, bigKey) {
		t.Errorf("sink received the oversize mail's bytes")
	}
	for key, body := range sink.bodies {
		if sink.sizes[key] != int64(len(body)) {
			t.Errorf("Receive(%s) got RFC822.SIZE %d, want %d", key, sink.sizes[key], len(body))
		}
	}
	if diff := cmp.Diff([]string{bigKey}, sink.oversize); diff != "" {
		t.Errorf("oversize keys (-want +got):\n%s", diff)
	}
	for _, c := range ts.commands() {
		if strings.Contains(c, "BODY.PEEK[]") && strings.Contains(c, "FETCH 2 ") {
			t.Errorf("oversize mail fetched: %q", c)
		}
	}
	if got := ts.count(t, DefaultErrorFolder); got != 1 {
		t.Errorf("error folder holds %d, want 1", got)
	}
	if got := ts.count(t, "INBOX"); got != 2 {
		t.Errorf("INBOX holds %d, want the 2 kept mails", got)
	}
}

func TestPoll_uidValidityChangeGivesNewKeys(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{preCreate: []string{"Shared"}})
	ts.deliver(t, "Shared", testMails(2, "first")...)
	cfg := ts.config(t)
	cfg.Folders = []string{"Shared"}
	cfg.AfterImport = mailsource.AfterImportKeep
	f := mustNew(t, cfg)
	sink := newFakeSink()
	oldUV := uidValidity(t, ts, "Shared")
	mustPoll(t, f, sink)

	// The folder is recreated: UIDs 1 and 2 now name other mails.
	if err := ts.user.Delete("Shared"); err != nil {
		t.Fatal(err)
	}
	if err := ts.user.Create("Shared", nil); err != nil {
		t.Fatal(err)
	}
	ts.deliver(t, "Shared", testMails(2, "second")...)
	newUV := uidValidity(t, ts, "Shared")
	if newUV == oldUV {
		t.Fatalf("server kept UIDVALIDITY %d", oldUV)
	}
	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 2}, res); diff != "" {
		t.Errorf("Poll() after recreate (-want +got):\n%s", diff)
	}
	want := append(keysFor("Shared", oldUV, 1, 2), keysFor("Shared", newUV, 1, 2)...)
	slices.Sort(want)
	if diff := cmp.Diff(want, sink.keys(mailsource.StatusReceived)); diff != "" {
		t.Errorf("committed keys (-want +got):\n%s", diff)
	}
	if got := string(sink.bodies[SourceKey("Shared", newUV, 1)]); got != string(testMail("second 1")) {
		t.Errorf("new uid 1 body = %q", got)
	}
}

func TestPoll_commitFailureDeletesNothing(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMails(5, "commit")...)
	f := mustNew(t, ts.config(t))
	sink := newFakeSink()
	sink.failCommit = 1

	_, err := f.Poll(context.Background(), sink)
	if err == nil || !strings.Contains(err.Error(), "database unavailable") {
		t.Fatalf("Poll() error = %v, want the commit failure", err)
	}
	if got := ts.count(t, "INBOX"); got != 5 {
		t.Fatalf("INBOX holds %d after a failed commit, want 5", got)
	}
	for _, c := range ts.commands() {
		if strings.Contains(c, "STORE") || strings.Contains(c, "EXPUNGE") {
			t.Errorf("server changed after a failed commit: %q", c)
		}
	}

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 5, Deleted: 5}, res); diff != "" {
		t.Errorf("retry Poll() (-want +got):\n%s", diff)
	}
	if got := len(sink.keys(mailsource.StatusReceived)); got != 5 {
		t.Errorf("committed %d, want 5 exactly once", got)
	}
}

func TestPoll_finishesAnInterruptedPoll(t *testing.T) {
	t.Parallel()
	// given: everything was committed by a poll that died before deleting
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMail("done 1"), testMail("GARBAGE 2"), testMail("done 3"))
	cfg := ts.config(t)
	cfg.AfterImport = mailsource.AfterImportKeep
	sink := newFakeSink()
	uv := uidValidity(t, ts, "INBOX")
	sink.committed[SourceKey("INBOX", uv, 1)] = mailsource.StatusReceived
	sink.committed[SourceKey("INBOX", uv, 2)] = mailsource.StatusFailed
	sink.committed[SourceKey("INBOX", uv, 3)] = mailsource.StatusReceived
	cfg.AfterImport = mailsource.AfterImportDelete
	f := mustNew(t, cfg)

	// when
	res := mustPoll(t, f, sink)

	// then: no download, no second event, the server is tidied up
	if diff := cmp.Diff(mailsource.PollResult{Skipped: 3, Deleted: 3}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	if len(sink.received) != 0 || sink.commits != 0 {
		t.Errorf("sink got %d mails and %d commits, want none", len(sink.received), sink.commits)
	}
	if got := ts.count(t, "INBOX"); got != 0 {
		t.Errorf("INBOX holds %d, want 0", got)
	}
	if got := ts.count(t, DefaultErrorFolder); got != 1 {
		t.Errorf("error folder holds %d, want the failed one", got)
	}
}

func TestPoll_subfolders(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{preCreate: []string{"Support", "Support/Urgent"}})
	ts.deliver(t, "INBOX", testMail("inbox 1"))
	ts.deliver(t, "Support", testMails(2, "support")...)
	ts.deliver(t, "Support/Urgent", testMail("urgent 1"))
	cfg := ts.config(t)
	cfg.Folders = []string{"INBOX", "Support", "Support/Urgent"}
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 4, Deleted: 4}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	want := append(append(keysFor("INBOX", uidValidity(t, ts, "INBOX"), 1),
		keysFor("Support", uidValidity(t, ts, "Support"), 1, 2)...),
		keysFor("Support/Urgent", uidValidity(t, ts, "Support/Urgent"), 1)...)
	slices.Sort(want)
	if diff := cmp.Diff(want, sink.keys(mailsource.StatusReceived)); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	for _, folder := range cfg.Folders {
		if got := ts.count(t, folder); got != 0 {
			t.Errorf("%s holds %d, want 0", folder, got)
		}
	}
}

func TestPoll_missingFolderDoesNotStopTheOthers(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMail("inbox 1"))
	cfg := ts.config(t)
	cfg.Folders = []string{"Gone", "INBOX"}
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res, err := f.Poll(context.Background(), sink)

	if mailsource.ServerReply(err) == "" {
		t.Errorf("Poll() error = %v, want the server's reply to SELECT Gone", err)
	}
	if res.Fetched != 1 {
		t.Errorf("Fetched = %d, want 1 from INBOX", res.Fetched)
	}
}

func TestPoll_mailTheServerCannotSendDoesNotHoldUpTheRest(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{unreadable: 2})
	ts.deliver(t, "INBOX", testMails(3, "readable")...)
	f := mustNew(t, ts.config(t))
	sink := newFakeSink()

	for poll := 1; poll <= 2; poll++ {
		res, err := f.Poll(context.Background(), sink)

		want := mailsource.PollResult{Fetched: 2, Deleted: 2}
		if poll == 2 {
			want = mailsource.PollResult{}
		}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("Poll() #%d (-want +got):\n%s", poll, diff)
		}
		if got, want := mailsource.ServerReply(err), "NO [SERVERBUG] Some messages could not be FETCHed"; got != want {
			t.Errorf("Poll() #%d reply = %q (%v), want %q", poll, got, err, want)
		}
	}
	if got := ts.count(t, "INBOX"); got != 1 {
		t.Errorf("INBOX holds %d, want only the unreadable mail", got)
	}
}

func TestPoll_withoutUIDPLUSNeverExpungesPlainly(t *testing.T) {
	t.Parallel()
	// given: an IMAP4rev1 server without UIDPLUS and MOVE, holding a mail
	// another client flagged \Deleted but has not expunged yet
	ts := startServer(t, serverOptions{caps: imap.CapSet{imap.CapIMAP4rev1: {}}})
	ts.deliver(t, "INBOX", testMail("theirs"))
	ts.deliver(t, "INBOX", testMails(3, "ours")...)
	ts.deliver(t, "INBOX", testMail("GARBAGE ours"))
	flagDeleted(t, ts, "INBOX", 1)
	f := mustNew(t, ts.config(t))
	sink := newFakeSink()

	// when
	first := mustPoll(t, f, sink)
	second := mustPoll(t, f, sink)

	// then
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 3, Failed: 1}, first); diff != "" {
		t.Errorf("first Poll() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(mailsource.PollResult{}, second); diff != "" {
		t.Errorf("second Poll() (-want +got):\n%s", diff)
	}
	for _, c := range ts.commands() {
		if c == "EXPUNGE" || strings.HasPrefix(c, "UID EXPUNGE") || strings.HasPrefix(c, "UID MOVE") || c == "CLOSE" {
			t.Errorf("command %q sent to a server without UIDPLUS/MOVE", c)
		}
	}
	if got := ts.count(t, "INBOX"); got != 5 {
		t.Errorf("INBOX holds %d, want all 5 (flagged only)", got)
	}
	if got := ts.count(t, DefaultErrorFolder); got != 1 {
		t.Errorf("error folder holds %d, want the copied failure", got)
	}
	if slices.Contains(sink.received, SourceKey("INBOX", uidValidity(t, ts, "INBOX"), 1)) {
		t.Errorf("another client's \\Deleted mail was imported")
	}
}

func flagDeleted(tb testing.TB, ts *testServer, folder string, uid imap.UID) {
	tb.Helper()
	cfg := ts.config(tb)
	f := mustNew(tb, cfg)
	s, err := f.dial(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	defer s.close()
	if _, err := s.c.Select(folder, nil).Wait(); err != nil {
		tb.Fatal(err)
	}
	err = s.c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	if err != nil {
		tb.Fatal(err)
	}
}

func TestPoll_sinkThatReadsHalfAMailDoesNotHang(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMails(3, strings.Repeat("long ", 2000))...)
	f := mustNew(t, ts.config(t))
	sink := newFakeSink()
	sink.readLimit = 100

	res := mustPoll(t, f, sink)

	if res.Fetched != 3 {
		t.Errorf("Fetched = %d, want 3", res.Fetched)
	}
}

func TestPoll_cancelledMidFetchReturns(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ts.deliver(t, "INBOX", testMails(20, strings.Repeat("big ", 5000))...)
	f := mustNew(t, ts.config(t))
	sink := newFakeSink()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink.onReceive = func(string) { cancel() }

	_, err := f.Poll(ctx, sink)

	if !errors.Is(err, context.Canceled) {
		t.Errorf("Poll() error = %v, want context.Canceled", err)
	}
	if got := ts.count(t, "INBOX"); got != 20 {
		t.Errorf("INBOX holds %d, want 20 (nothing committed)", got)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})

	t.Run("right password is ok", func(t *testing.T) {
		t.Parallel()
		if err := mustNew(t, ts.config(t)).Check(context.Background()); err != nil {
			t.Errorf("Check() = %v, want nil", err)
		}
	})
	t.Run("wrong password returns the server's words", func(t *testing.T) {
		t.Parallel()
		cfg := ts.config(t)
		cfg.Password = "wrong"
		err := mustNew(t, cfg).Check(context.Background())
		var se *mailsource.ServerError
		if !errors.As(err, &se) {
			t.Fatalf("Check() = %v, want a *mailsource.ServerError", err)
		}
		if want := "NO [AUTHENTICATIONFAILED] Authentication failed"; se.Reply != want || se.Op != "login" {
			t.Errorf("Check() reply = %q (op %q), want %q (op login)", se.Reply, se.Op, want)
		}
	})
	t.Run("missing folder returns the server's words", func(t *testing.T) {
		t.Parallel()
		cfg := ts.config(t)
		cfg.Folders = []string{"INBOX", "Nope"}
		err := mustNew(t, cfg).Check(context.Background())
		if mailsource.ServerReply(err) == "" || !strings.Contains(err.Error(), "select Nope") {
			t.Errorf("Check() = %v, want the server's reply to selecting Nope", err)
		}
	})
	t.Run("a server that stops answering times out", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ln.Close() }()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = c.Write([]byte("* OK [CAPABILITY IMAP4rev1] mute server\r\n"))
			_, _ = c.Read(make([]byte, 4096)) // then silence
			time.Sleep(5 * time.Second)
		}()
		cfg := Config{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Security: mailsource.SecurityNone,
			AllowPlaintextAuth: true, Username: "u", Password: "p", Timeout: 200 * time.Millisecond}

		err = mustNew(t, cfg).Check(context.Background())

		if !errors.Is(err, ErrStalled) {
			t.Errorf("Check() = %v, want ErrStalled", err)
		}
	})
}

func TestLogin(t *testing.T) {
	t.Parallel()
	const utf8Password = "pässwörd-✓-密码"
	tests := []struct {
		name      string
		server    serverOptions
		configure func(*Config)
		wantCmd   string // a command the server must have seen
		wantErr   error
	}{
		{
			name:      "plain LOGIN by default",
			server:    serverOptions{},
			configure: func(*Config) {},
			wantCmd:   "LOGIN",
		},
		{
			name:   "prevent_plain_login uses AUTHENTICATE PLAIN with a UTF-8 password",
			server: serverOptions{password: utf8Password},
			configure: func(c *Config) {
				c.PreventPlainLogin = true
				c.Password = utf8Password
			},
			wantCmd: "AUTHENTICATE PLAIN",
		},
		{
			name:   "prevent_plain_login falls back to CRAM-MD5",
			server: serverOptions{mechs: []string{"CRAM-MD5"}},
			configure: func(c *Config) {
				c.PreventPlainLogin = true
			},
			wantCmd: "AUTHENTICATE CRAM-MD5",
		},
		{
			name:   "prevent_plain_login with neither mechanism refuses to log in",
			server: serverOptions{mechs: []string{"GSSAPI"}},
			configure: func(c *Config) {
				c.PreventPlainLogin = true
			},
			wantErr: ErrNoMechanism,
		},
		{
			name:   "XOAUTH2 with a token",
			server: serverOptions{mechs: []string{"PLAIN", "XOAUTH2"}},
			configure: func(c *Config) {
				c.Password = ""
				c.TokenSource = func(context.Context) (string, error) { return testToken, nil }
			},
			wantCmd: "AUTHENTICATE XOAUTH2",
		},
		{
			name:   "XOAUTH2 with a bad token returns the server's words",
			server: serverOptions{mechs: []string{"XOAUTH2"}},
			configure: func(c *Config) {
				c.TokenSource = func(context.Context) (string, error) { return "expired", nil }
			},
			wantErr: ErrRefused,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, tc.server)
			ts.deliver(t, "INBOX", testMail("login"))
			cfg := ts.config(t)
			tc.configure(&cfg)
			sink := newFakeSink()

			res, err := mustNew(t, cfg).Poll(context.Background(), sink)

			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Poll() error = %v, want %v", err, tc.wantErr)
				}
				if errors.Is(tc.wantErr, ErrRefused) && mailsource.ServerReply(err) != "NO [AUTHENTICATIONFAILED] AUTHENTICATE failed." {
					t.Errorf("reply = %q, want the server's NO", mailsource.ServerReply(err))
				}
				return
			}
			if err != nil {
				t.Fatalf("Poll() error = %v", err)
			}
			if res.Fetched != 1 {
				t.Errorf("Fetched = %d, want 1", res.Fetched)
			}
			cmds := ts.commands()
			if !slices.ContainsFunc(cmds, func(c string) bool { return strings.HasPrefix(c, tc.wantCmd) }) {
				t.Errorf("commands %q lack %q", cmds, tc.wantCmd)
			}
			if tc.wantCmd != "LOGIN" && slices.ContainsFunc(cmds, func(c string) bool { return strings.HasPrefix(c, "LOGIN") }) {
				t.Errorf("LOGIN sent although %s was wanted", tc.wantCmd)
			}
			if cfg.PreventPlainLogin && strings.Contains(ts.trace.String(), cfg.Password) {
				t.Errorf("password crossed the wire in clear text")
			}
		})
	}
}

func TestLogin_exchangeSharedMailboxUserNameAsTyped(t *testing.T) {
	t.Parallel()
	const user = `CONTOSO\alice\helpdesk "shared"`
	for _, prevent := range []bool{false, true} {
		t.Run(fmt.Sprintf("prevent_plain_login=%v", prevent), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{username: user})
			ts.deliver(t, "INBOX", testMail("shared"))
			cfg := ts.config(t)
			cfg.Username = user
			cfg.PreventPlainLogin = prevent

			res := mustPoll(t, mustNew(t, cfg), newFakeSink())

			if res.Fetched != 1 {
				t.Errorf("Fetched = %d, want 1", res.Fetched)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		startTLS  bool
		configure func(*Config, []byte)
		wantOK    bool
	}{
		{"implicit TLS with an unknown CA fails", false, func(*Config, []byte) {}, false},
		{"implicit TLS with tls_skip_verify passes", false, func(c *Config, _ []byte) { c.TLSSkipVerify = true }, true},
		{"implicit TLS with the extra CA passes", false, func(c *Config, ca []byte) { c.CACertPEM = ca }, true},
		{"tls_server_name is verified instead of the host", false, func(c *Config, ca []byte) {
			c.CACertPEM = ca
			c.Host = "localhost"
			c.TLSServerName = "imap.test"
		}, true},
		{"a wrong tls_server_name fails", false, func(c *Config, ca []byte) {
			c.CACertPEM = ca
			c.TLSServerName = "other.test"
		}, false},
		{"STARTTLS with an unknown CA fails", true, func(*Config, []byte) {}, false},
		{"STARTTLS with the extra CA passes", true, func(c *Config, ca []byte) { c.CACertPEM = ca }, true},
		{"RootCAs holding the CA replace the system roots", false, func(c *Config, ca []byte) {
			c.RootCAs = x509.NewCertPool()
			c.RootCAs.AppendCertsFromPEM(ca)
		}, true},
		{"RootCAs without the CA fail", false, func(c *Config, _ []byte) { c.RootCAs = x509.NewCertPool() }, false},
		{"the extra CA is added to RootCAs", false, func(c *Config, ca []byte) {
			c.RootCAs = x509.NewCertPool()
			c.CACertPEM = ca
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{tls: !tc.startTLS, startTLS: tc.startTLS})
			cfg := ts.config(t)
			cfg.Security = mailsource.SecurityTLS
			if tc.startTLS {
				cfg.Security = mailsource.SecurityStartTLS
			}
			tc.configure(&cfg, ts.certPE)

			err := mustNew(t, cfg).Check(context.Background())

			if tc.wantOK && err != nil {
				t.Errorf("Check() = %v, want nil", err)
			}
			var certErr *tls.CertificateVerificationError
			if !tc.wantOK && !errors.As(err, &certErr) {
				t.Errorf("Check() = %v, want a certificate verification error", err)
			}
		})
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	valid := Config{Host: "imap.example.org", Security: mailsource.SecurityTLS, Username: "u", Password: "p"}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // fields named in the error; nil means valid
	}{
		{"defaults are valid", func(*Config) {}, nil},
		{"move needs MoveFolder", func(c *Config) { c.AfterImport = mailsource.AfterImportMove }, []string{"MoveFolder"}},
		{"everything wrong at once", func(c *Config) {
			*c = Config{Port: 70000, Security: "ssl", AfterImport: "archive", MaxMailSize: -1, Timeout: -1, BatchSize: -1,
				CACertPEM: []byte("junk"), Folders: []string{" "}}
		}, []string{"Host", "Port", "Security", "CACertPEM", "Username", "Password or TokenSource", "Folders[0]",
			"AfterImport", "MaxMailSize", "Timeout", "BatchSize"}},
		{"the error folder must not be polled", func(c *Config) { c.Folders = []string{"INBOX", "HD Error Messages"} }, []string{"ErrorFolder"}},
		{"the move folder must not be polled", func(c *Config) {
			c.AfterImport = mailsource.AfterImportMove
			c.MoveFolder = "Done"
			c.Folders = []string{"INBOX", "Done"}
		}, []string{"MoveFolder"}},
		{"a token source replaces the password", func(c *Config) {
			c.Password = ""
			c.TokenSource = func(context.Context) (string, error) { return "t", nil }
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tc.change(&cfg)
			err := cfg.Validate()
			if tc.want == nil {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %q", tc.want)
			}
			for _, field := range tc.want {
				if !strings.Contains(err.Error(), field) {
					t.Errorf("Validate() = %v, does not name %s", err, field)
				}
			}
			if got, want := len(strings.Split(err.Error(), "\n")), len(tc.want); got != want {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", got, want, err)
			}
		})
	}
}

func TestSourceKey(t *testing.T) {
	t.Parallel()
	if got, want := SourceKey("INBOX/Sub", 1700000000, 42), "imap/INBOX/Sub/1700000000/42"; got != want {
		t.Errorf("SourceKey() = %q, want %q", got, want)
	}
}

// countingLiteral is an imap.LiteralReader that counts reads.
type countingLiteral struct {
	r     *strings.Reader
	size  int64
	reads int
}

func (c *countingLiteral) Read(p []byte) (int, error) { c.reads++; return c.r.Read(p) }
func (c *countingLiteral) Size() int64                { return c.size }

func TestLiteralGuard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		data     string
		size     int64
		wantErr  error
		wantRead string
	}{
		{"a whole literal ends in io.EOF", "hello", 5, io.EOF, "hello"},
		{"a literal cut short ends in io.ErrUnexpectedEOF", "hel", 5, io.ErrUnexpectedEOF, "hel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lit := &countingLiteral{r: strings.NewReader(tc.data), size: tc.size}
			g := &literalGuard{r: lit}

			got, err := io.ReadAll(g)
			reads := lit.reads
			_, again := g.Read(make([]byte, 8))

			if string(got) != tc.wantRead {
				t.Errorf("read %q, want %q", got, tc.wantRead)
			}
			if errors.Is(tc.wantErr, io.EOF) && err != nil || !errors.Is(tc.wantErr, io.EOF) && !errors.Is(err, tc.wantErr) {
				t.Errorf("ReadAll() error = %v, want %v", err, tc.wantErr)
			}
			if !errors.Is(again, tc.wantErr) || lit.reads != reads {
				t.Errorf("read after the end = %v with %d more reads of the literal; want %v and none", again, lit.reads-reads, tc.wantErr)
			}
		})
	}
}

// A server may send a FETCH response's items in any order (RFC 9051
// section 7.5.2): BODY[] before UID must import the mail all the same.
func TestPoll_bodyBeforeUID(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{bodyFirst: true})
	ts.deliver(t, "INBOX", testMails(3, "body first")...)
	cfg := ts.config(t)
	cfg.BatchSize = 2
	f := mustNew(t, cfg)
	sink := newFakeSink()

	res := mustPoll(t, f, sink)

	if diff := cmp.Diff(mailsource.PollResult{Fetched: 3, Deleted: 3}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	uv := uidValidity(t, ts, "INBOX")
	for i := 1; i <= 3; i++ {
		key := SourceKey("INBOX", uv, imap.UID(i))
		if got, want := string(sink.bodies[key]), string(testMail(fmt.Sprintf("body first %d", i))); got != want {
			t.Errorf("body of %s = %q, want %q", key, got, want)
		}
	}
	if got := ts.count(t, "INBOX"); got != 0 {
		t.Errorf("INBOX holds %d mails, want 0", got)
	}

	// A mail larger than what is spooled in memory goes through a file.
	big := testMail("big " + strings.Repeat("x", 3*spoolMemory/2))
	ts.deliver(t, "INBOX", big)
	res = mustPoll(t, f, sink)
	if diff := cmp.Diff(mailsource.PollResult{Fetched: 1, Deleted: 1}, res); diff != "" {
		t.Errorf("Poll() of a big mail (-want +got):\n%s", diff)
	}
	if got := sink.bodies[SourceKey("INBOX", uv, 4)]; string(got) != string(big) {
		t.Errorf("big mail arrived with %d bytes, want %d", len(got), len(big))
	}
}

// A mail the server sends without any UID cannot be keyed: it stays on the
// server and the poll says so instead of skipping it silently.
func TestPoll_mailWithoutUIDIsReported(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{bodyFirst: true, omitUID: true})
	ts.deliver(t, "INBOX", testMail("no uid"))
	f := mustNew(t, ts.config(t))
	sink := newFakeSink()

	res, err := f.Poll(context.Background(), sink)

	if !errors.Is(err, ErrNoUID) {
		t.Errorf("Poll() error = %v, want ErrNoUID", err)
	}
	if diff := cmp.Diff(mailsource.PollResult{}, res); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
	if got := ts.count(t, "INBOX"); got != 1 {
		t.Errorf("INBOX holds %d mails, want 1", got)
	}
}

// An after-import step the server refuses (no right to create the error
// folder, a full quota) leaves those mails where they are: new mail is
// still imported, the step is tried again on every poll, and each poll
// reports it with the server's words.
func TestPoll_refusedAfterImportStepDoesNotBlockNewMail(t *testing.T) {
	t.Parallel()
	const noPerm = "NO [NOPERM] Permission denied"
	const overQuota = "NO [OVERQUOTA] Quota exceeded (mailbox for user is full)"
	tests := []struct {
		name      string
		opts      serverOptions
		configure func(*Config)
		first     []byte // besides a good mail
		wantFirst mailsource.PollResult
		reply     string
		// wantLast is the poll after the server gives in.
		wantLast mailsource.PollResult
	}{
		{
			name:      "the error folder cannot be created",
			opts:      serverOptions{refuseCreate: []string{DefaultErrorFolder}},
			first:     testMail("GARBAGE 1"),
			wantFirst: mailsource.PollResult{Fetched: 1, Failed: 1, Deleted: 1},
			reply:     noPerm,
			wantLast:  mailsource.PollResult{Skipped: 1, Deleted: 1},
		},
		{
			name:      "the move folder is over quota",
			opts:      serverOptions{preCreate: []string{"Done"}, refuseMove: []string{"Done"}},
			configure: func(c *Config) { c.AfterImport, c.MoveFolder = mailsource.AfterImportMove, "Done" },
			first:     testMail("good 0"),
			wantFirst: mailsource.PollResult{Fetched: 2},
			reply:     overQuota,
			wantLast:  mailsource.PollResult{Skipped: 3, Deleted: 3},
		},
		{
			name:      "the move folder is over quota, on a server without MOVE",
			opts:      serverOptions{caps: imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}}, preCreate: []string{"Done"}, refuseMove: []string{"Done"}},
			configure: func(c *Config) { c.AfterImport, c.MoveFolder = mailsource.AfterImportMove, "Done" },
			first:     testMail("good 0"),
			wantFirst: mailsource.PollResult{Fetched: 2},
			reply:     overQuota,
			wantLast:  mailsource.PollResult{Skipped: 3, Deleted: 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, tc.opts)
			ts.deliver(t, "INBOX", tc.first, testMail("good 1"))
			cfg := ts.config(t)
			if tc.configure != nil {
				tc.configure(&cfg)
			}
			f := mustNew(t, cfg)
			sink := newFakeSink()

			res, err := f.Poll(context.Background(), sink)
			if diff := cmp.Diff(tc.wantFirst, res); diff != "" {
				t.Errorf("first Poll() (-want +got):\n%s", diff)
			}
			if got := mailsource.ServerReply(err); got != tc.reply {
				t.Errorf("first Poll() reply = %q (%v), want %q", got, err, tc.reply)
			}

			// when: new mail arrives while the server still refuses
			ts.deliver(t, "INBOX", testMail("good 2"))
			res, err = f.Poll(context.Background(), sink)
			if res.Fetched != 1 {
				t.Errorf("second Poll() = %+v (err %v), want the new mail fetched", res, err)
			}
			if got := mailsource.ServerReply(err); got != tc.reply {
				t.Errorf("second Poll() reply = %q (%v), want %q", got, err, tc.reply)
			}
			if got := len(sink.received); got != 3 {
				t.Errorf("sink received %d mails, want 3", got)
			}

			// then: once the server gives in, the next poll finishes the step
			ts.refuse(nil, nil)
			res, err = f.Poll(context.Background(), sink)
			if err != nil {
				t.Errorf("third Poll() error = %v", err)
			}
			if diff := cmp.Diff(tc.wantLast, res); diff != "" {
				t.Errorf("third Poll() (-want +got):\n%s", diff)
			}
			if got := ts.count(t, "INBOX"); got != 0 {
				t.Errorf("INBOX holds %d mails, want 0", got)
			}
		})
	}
}

// Without TLS no password and no token crosses the wire unless the account
// allows it; CRAM-MD5, which sends only a digest, is used when offered.
func TestLogin_withoutTLS(t *testing.T) {
	t.Parallel()
	token := func(context.Context) (string, error) { return testToken, nil }
	tests := []struct {
		name      string
		server    serverOptions
		configure func(*Config)
		wantCmd   string // "" when the login must be refused before any is sent
	}{
		{name: "LOGIN is refused", configure: func(*Config) {}},
		{name: "prevent_plain_login's AUTHENTICATE PLAIN is refused", server: serverOptions{mechs: []string{"PLAIN"}},
			configure: func(c *Config) { c.PreventPlainLogin = true }},
		{name: "XOAUTH2 is refused", server: serverOptions{mechs: []string{"PLAIN", "XOAUTH2"}},
			configure: func(c *Config) { c.Password, c.TokenSource = "", token }},
		{name: "CRAM-MD5 is used when offered", server: serverOptions{mechs: []string{"PLAIN", "CRAM-MD5"}},
			configure: func(*Config) {}, wantCmd: "AUTHENTICATE CRAM-MD5"},
		{name: "CRAM-MD5 is used with prevent_plain_login too", server: serverOptions{mechs: []string{"PLAIN", "CRAM-MD5"}},
			configure: func(c *Config) { c.PreventPlainLogin = true }, wantCmd: "AUTHENTICATE CRAM-MD5"},
		{name: "allow_plaintext_auth allows LOGIN",
			configure: func(c *Config) { c.AllowPlaintextAuth = true }, wantCmd: "LOGIN"},
		{name: "allow_plaintext_auth allows XOAUTH2", server: serverOptions{mechs: []string{"XOAUTH2"}},
			configure: func(c *Config) { c.AllowPlaintextAuth, c.Password, c.TokenSource = true, "", token }, wantCmd: "AUTHENTICATE XOAUTH2"},
		{name: "STARTTLS needs no allowance", server: serverOptions{startTLS: true},
			configure: func(c *Config) { c.Security, c.TLSSkipVerify = mailsource.SecurityStartTLS, true }, wantCmd: "LOGIN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, tc.server)
			ts.deliver(t, "INBOX", testMail("plaintext"))
			cfg := ts.config(t)
			cfg.AllowPlaintextAuth = false
			tc.configure(&cfg)

			res, err := mustNew(t, cfg).Poll(context.Background(), newFakeSink())

			if tc.wantCmd == "" {
				if !errors.Is(err, mailsource.ErrPlaintextAuth) {
					t.Fatalf("Poll() error = %v, want ErrPlaintextAuth", err)
				}
				for _, c := range ts.commands() {
					if strings.HasPrefix(c, "LOGIN") || strings.HasPrefix(c, "AUTHENTICATE") {
						t.Errorf("sent %q without TLS", c)
					}
				}
				if strings.Contains(ts.trace.String(), testPassword) {
					t.Error("the password crossed the wire in clear text")
				}
				return
			}
			if err != nil || res.Fetched != 1 {
				t.Fatalf("Poll() = %+v, %v; want the mail fetched", res, err)
			}
			if cmds := ts.commands(); !slices.ContainsFunc(cmds, func(c string) bool { return strings.HasPrefix(c, tc.wantCmd) }) {
				t.Errorf("commands %q lack %q", cmds, tc.wantCmd)
			}
		})
	}
}
