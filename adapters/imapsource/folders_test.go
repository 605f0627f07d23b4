package imapsource

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// folderTree fills user's mailbox on srv with one mail in each folder of a
// small tree (Maildir++ on Dovecot: "." separates levels). The folder names
// are as IMAP shows them.
func folderTree(t *testing.T, srv *dovecottest.Server, user string) []string {
	t.Helper()
	folders := []string{"INBOX", "INBOX.Projects", "INBOX.Projects.2026", "INBOX.Done", "INBOX.Done.Old",
		"INBOX.Errors", "Other"}
	for _, f := range folders {
		if f != "INBOX" {
			srv.CreateFolder(t, user, strings.ReplaceAll(f, ".", "/"))
		}
		srv.DeliverManyTo(t, user, strings.ReplaceAll(f, ".", "/"), [][]byte{testMail("mail in " + f)})
	}
	return folders
}

// folderOf returns the folder part of an IMAP source key.
func folderOf(key string) string {
	rest := strings.TrimPrefix(key, "imap/")
	for range 2 {
		rest = rest[:strings.LastIndex(rest, "/")]
	}
	return rest
}

func receivedFolders(sink *fakeSink) []string {
	var out []string
	for _, k := range sink.received {
		out = append(out, folderOf(k))
	}
	slices.Sort(out)
	return out
}

// adminSession opens an IMAP session of cfg's user for the test to change the
// mailbox with (subscribe, delete folders).
func adminSession(t *testing.T, cfg Config) *session {
	t.Helper()
	s, err := newFetcher(cfg, nil).dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

// wantFolderCounts checks how many mails each folder of user holds.
func wantFolderCounts(t *testing.T, srv *dovecottest.Server, user string, want map[string]int) {
	t.Helper()
	for folder, n := range want {
		if got := srv.FolderCount(t, user, folder); got != n {
			t.Errorf("%s holds %d mails, want %d", folder, got, n)
		}
	}
}

func TestDovecot_includeSubfoldersWalksTheTreeButNotTheMoveOrErrorFolder(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "walk", "pw")
	folderTree(t, srv, "walk")
	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "walk", "pw")
	cfg.IncludeSubfolders = true
	cfg.AfterImport, cfg.MoveFolder, cfg.ErrorFolder = mailsource.AfterImportMove, "INBOX.Done", "INBOX.Errors"
	sink := newFakeSink()

	res := mustPoll(t, mustNew(t, cfg), sink)

	want := []string{"INBOX", "INBOX.Projects", "INBOX.Projects.2026"}
	if got := receivedFolders(sink); !slices.Equal(got, want) {
		t.Errorf("mails imported from %q, want one from each of %q (not the move or error folder, nor Other)", got, want)
	}
	if res.Fetched != 3 {
		t.Errorf("Fetched = %d, want 3", res.Fetched)
	}
	// Each folder's mail went to the move folder, which was not read.
	wantFolderCounts(t, srv, "walk", map[string]int{"INBOX": 0, "INBOX/Projects": 0, "INBOX/Projects/2026": 0, "INBOX/Done": 4,
		"INBOX/Done/Old": 1, "INBOX/Errors": 1, "Other": 1})
}

func TestDovecot_onlySubscribedWalksTheSubscribedFoldersOnly(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "subs", "pw")
	folderTree(t, srv, "subs")
	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "subs", "pw")
	if err := adminSession(t, cfg).c.Subscribe("INBOX.Projects.2026").Wait(); err != nil {
		t.Fatal(err)
	}
	cfg.IncludeSubfolders, cfg.OnlySubscribed = true, true
	cfg.AfterImport = mailsource.AfterImportKeep
	sink := newFakeSink()

	mustPoll(t, mustNew(t, cfg), sink)

	// INBOX itself is named, so it is read subscribed or not.
	want := []string{"INBOX", "INBOX.Projects.2026"}
	if got := receivedFolders(sink); !slices.Equal(got, want) {
		t.Errorf("mails imported from %q, want %q", got, want)
	}
}

func TestDovecot_aFolderThatVanishesIsReportedAndTheOthersAreRead(t *testing.T) {
	t.Parallel()
	srv := dovecottest.Start(t)
	srv.AddUser(t, "gone", "pw")
	srv.CreateFolder(t, "gone", "INBOX/A")
	srv.CreateFolder(t, "gone", "INBOX/B")
	cfg := dovecotConfig(t, srv, srv.IMAPAddr, "gone", "pw")
	cfg.IncludeSubfolders = true
	f := mustNew(t, cfg)
	sink := newFakeSink()
	mustPoll(t, f, sink)

	if err := adminSession(t, cfg).c.Delete("INBOX.A").Wait(); err != nil {
		t.Fatal(err)
	}
	srv.DeliverManyTo(t, "gone", "INBOX/B", [][]byte{testMail("after A vanished")})
	srv.Deliver(t, "gone", testMail("inbox after A vanished"))
	res, err := f.Poll(context.Background(), sink)

	if !errors.Is(err, mailsource.ErrFolderVanished) || !strings.Contains(err.Error(), `"INBOX.A"`) {
		t.Errorf("Poll() error = %v, want ErrFolderVanished naming INBOX.A", err)
	}
	if res.Fetched != 2 {
		t.Errorf("Fetched = %d, want the 2 mails of INBOX and INBOX.B", res.Fetched)
	}
	if _, err := f.Poll(context.Background(), sink); err != nil {
		t.Errorf("third Poll() error = %v, want nil: a vanished folder is reported once", err)
	}
}

func TestDovecot_afterImportTrash(t *testing.T) {
	t.Parallel()
	t.Run("the folder the server marks \\Trash", func(t *testing.T) {
		t.Parallel()
		srv := dovecottest.StartWith(t, dovecottest.Options{TrashFolder: "Bin"})
		srv.AddUser(t, "tr", "pw")
		srv.CreateFolder(t, "tr", "Bin")
		srv.DeliverMany(t, "tr", testMails(3, "trash"))
		cfg := dovecotConfig(t, srv, srv.IMAPAddr, "tr", "pw")
		cfg.AfterImport, cfg.TrashFolder = mailsource.AfterImportTrash, "Deleted Items" // the mark wins
		res := mustPoll(t, mustNew(t, cfg), newFakeSink())
		if res.Fetched != 3 || res.Deleted != 3 {
			t.Errorf("Poll() = %+v, want 3 fetched and moved", res)
		}
		wantFolderCounts(t, srv, "tr", map[string]int{"INBOX": 0, "Bin": 3, "Deleted Items": 0})
	})
	t.Run("the account's folder when none is marked", func(t *testing.T) {
		t.Parallel()
		srv := dovecottest.Start(t)
		srv.AddUser(t, "tr", "pw")
		srv.DeliverMany(t, "tr", testMails(2, "trash"))
		cfg := dovecotConfig(t, srv, srv.IMAPAddr, "tr", "pw")
		cfg.AfterImport, cfg.TrashFolder = mailsource.AfterImportTrash, "Deleted Items"
		mustPoll(t, mustNew(t, cfg), newFakeSink())
		wantFolderCounts(t, srv, "tr", map[string]int{"INBOX": 0, "Deleted Items": 2})
	})
	t.Run("neither: imported, left, reported", func(t *testing.T) {
		t.Parallel()
		srv := dovecottest.Start(t)
		srv.AddUser(t, "tr", "pw")
		srv.DeliverMany(t, "tr", testMails(2, "trash"))
		cfg := dovecotConfig(t, srv, srv.IMAPAddr, "tr", "pw")
		cfg.AfterImport = mailsource.AfterImportTrash
		f := mustNew(t, cfg)
		sink := newFakeSink()
		res, err := f.Poll(context.Background(), sink)
		if !errors.Is(err, ErrNoTrash) || res.Fetched != 2 {
			t.Errorf("Poll() = %+v, %v; want 2 fetched and ErrNoTrash", res, err)
		}
		res, _ = f.Poll(context.Background(), sink)
		if res.Fetched != 0 || srv.Count(t, "tr") != 2 {
			t.Errorf("second Poll() = %+v with %d mails left; want none imported again, both left", res, srv.Count(t, "tr"))
		}
	})
}
