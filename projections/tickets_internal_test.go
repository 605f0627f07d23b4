package projections

import (
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// TestArticleOf_WhereChangeOfCounts wants the events that give an article
// (Ticket shows them) to be those the tickets table counts (article_count).
func TestArticleOf_WhereChangeOfCounts(t *testing.T) {
	t.Parallel()
	articles := 0
	for _, name := range domain.EventNames() {
		e, err := domain.UnmarshalEvent(name, 1, []byte("{}"))
		if err != nil {
			t.Fatalf("UnmarshalEvent(%s) error = %v", name, err)
		}
		if _, ok := e.(domain.TicketCreated); ok {
			continue // the row starts at one article
		}
		a, _ := articleOf(e, time.Time{})
		if counts := changeOf(e).addsArticle; counts != (a != nil) {
			t.Errorf("%s: changeOf counts an article: %t; articleOf gives one: %t", name, counts, a != nil)
		}
		if a != nil {
			articles++
		}
	}
	if articles != 7 {
		t.Errorf("%d event types give an article, want 7 (mail appended or bundled, note, bounce, reply, auto-reply, error mail)", articles)
	}
}
