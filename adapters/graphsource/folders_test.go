package graphsource_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// TestPoll_includeSubfoldersWalksTheTree: three levels below the Inbox,
// children on more than one page, each mail imported once; the move and
// error folders, below the Inbox too, are not walked.
func TestPoll_includeSubfoldersWalksTheTree(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	cfg.Folders, cfg.IncludeSubfolders, cfg.PageSize = []string{"Inbox"}, true, 3
	cfg.AfterImport, cfg.MoveFolder, cfg.ErrorFolder = mailsource.AfterImportMove, "Inbox/Done", "Inbox/Failed"
	for i := 1; i <= 7; i++ { // with Done and Failed, 9 children: 3 pages
		srv.CreateFolder(box, fmt.Sprintf("Inbox/Team %d", i))
	}
	top := srv.AddMessages(box, "Inbox", testMails(1, "top"))
	last := srv.AddMessages(box, "Inbox/Team 7", testMails(1, "last page"))
	grand := srv.AddMessages(box, "Inbox/Team 1/Sub", testMails(2, "grandchild"))
	deepest := srv.AddMessages(box, "Inbox/Team 1/Sub/Deeper", testMails(1, "deepest"))
	srv.AddMessages(box, "Inbox/Done", testMails(1, "imported before"))
	srv.AddMessages(box, "Inbox/Done/Old", testMails(1, "below the move folder"))
	srv.AddMessages(box, "Inbox/Failed", testMails(1, "failed before"))

	f, sink := mustNew(t, cfg), newFakeSink(t)
	if res := mustPoll(t, f, sink); res.Fetched != 5 {
		t.Errorf("Poll() = %+v, want 5 fetched", res)
	}
	want := keysOf(slices.Concat(top, last, grand, deepest))
	slices.Sort(want)
	got := sink.keys(mailsource.StatusReceived)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("committed (-want +got):\n%s", diff)
	}
	if n := srv.Count(box, "Inbox/Done"); n != 6 {
		t.Errorf("Inbox/Done holds %d mails, want the 5 imported and the one there before", n)
	}
	paged := 0
	for _, r := range srv.Requests() {
		if strings.HasSuffix(r.Path, "/childFolders") && r.Query.Get("$skip") != "" {
			paged++
		}
	}
	if paged == 0 {
		t.Error("no childFolders page after the first was asked for")
	}

	// The mails now in the move folder are not walked into, so not read again.
	if res := mustPoll(t, f, sink); res.Fetched != 0 || res.Skipped != 0 {
		t.Errorf("second Poll() = %+v, want nothing", res)
	}
}

// TestPoll_vanishedSubfolderIsReportedOnce: a walked folder deleted
// between polls is named once; the other folders are still read.
func TestPoll_vanishedSubfolderIsReportedOnce(t *testing.T) {
	t.Parallel()
	srv, cfg, _ := setup(t, graphtest.Options{})
	cfg.Folders, cfg.IncludeSubfolders = []string{"Inbox"}, true
	srv.AddMessages(box, "Inbox/Gone/Below", testMails(1, "gone"))
	srv.AddMessages(box, "Inbox/Stays", testMails(1, "stays"))
	f, sink := mustNew(t, cfg), newFakeSink(t)
	if res := mustPoll(t, f, sink); res.Fetched != 2 {
		t.Fatalf("Poll() = %+v, want 2 fetched", res)
	}

	srv.DeleteFolder(box, "Inbox/Gone")
	srv.AddMessages(box, "Inbox/Stays", testMails(1, "new"))
	res, err := f.Poll(context.Background(), sink)
	if !errors.Is(err, mailsource.ErrFolderVanished) || !strings.Contains(err.Error(), `"Inbox/Gone"`) ||
		!strings.Contains(err.Error(), `"Inbox/Gone/Below"`) {
		t.Errorf("Poll() error = %v, want ErrFolderVanished naming Inbox/Gone and Inbox/Gone/Below", err)
	}
	if res.Fetched != 1 {
		t.Errorf("Poll() = %+v, want the new mail in Inbox/Stays read all the same", res)
	}
	if res := mustPoll(t, f, sink); res.Fetched != 0 {
		t.Errorf("third Poll() = %+v, want nothing and no error", res)
	}
}
