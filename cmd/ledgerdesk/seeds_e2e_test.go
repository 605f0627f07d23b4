package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// imapAccount creates an inbound account on dv's IMAP port for user (whose
// password is pw) through the API and returns its id.
func imapAccount(t *testing.T, api apiClient, dv *dovecottest.Server, name, user, pw, address string, extra map[string]any) string {
	t.Helper()
	host, portStr, _ := net.SplitHostPort(dv.IMAPAddr)
	port, _ := strconv.Atoi(portStr)
	body := map[string]any{"name": name, "protocol": "imap", "host": host, "port": port, "security": "none",
		"allow_plaintext_auth": true, "username": user, "password": pw, "poll_interval_seconds": 1, "after_import": "delete",
		"enabled": true, "account_address": address, "sender_address": address}
	for k, v := range extra {
		body[k] = v
	}
	var out struct{ ID string }
	if err := json.Unmarshal(api.must(http.MethodPost, "/api/v1/inbound-accounts", body), &out); err != nil || out.ID == "" {
		t.Fatalf("create account %s: %v", name, err)
	}
	return out.ID
}

// TestSeeds_TwoAccountsOneMail: the same mail, addressed to the addresses
// of two accounts that read two real mailboxes, makes one ticket and one
// skip, whichever mailbox is read first.
func TestSeeds_TwoAccountsOneMail(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "first", "pw1")
	dv.AddUser(t, "second", "pw2")
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}
	firstID := imapAccount(t, api, dv, "first", "first", "pw1", "first@desk.example", nil)
	secondID := imapAccount(t, api, dv, "second", "second", "pw2", "second@desk.example", nil)
	const to = "first@desk.example, second@desk.example"

	for i, order := range [][]string{{"first", "second"}, {"second", "first"}} {
		msgID := fmt.Sprintf("both-%d@customer.example", i)
		mail := e2eMail("Erika <erika@customer.example>", to, "Printer broken "+strconv.Itoa(i), msgID)
		// One mailbox gets the mail and is read; then the other.
		dv.Deliver(t, order[0], mail)
		waitOutcomes(t, api, msgID, 1)
		dv.Deliver(t, order[1], mail)
		outcomes := waitOutcomes(t, api, msgID, 2)

		var tickets, skips []string
		for _, e := range outcomes {
			switch e.Type {
			case domain.TicketCreatedName:
				tickets = append(tickets, payload[domain.TicketCreated](t, e).AccountID)
			case domain.MailSkippedName:
				s := payload[domain.MailSkipped](t, e)
				skips = append(skips, s.AccountID+" "+s.Code)
			}
		}
		// The account addressed first imports the mail (RULES.md 2.7).
		if len(tickets) != 1 || tickets[0] != firstID || len(skips) != 1 || skips[0] != secondID+" "+domain.SkipOtherAccount {
			t.Errorf("read %s first: tickets by %q, skips %q; want one ticket by %s and one other_account skip by %s",
				order[0], tickets, skips, firstID, secondID)
		}
	}
	if n := len(api.events(domain.TicketCreatedName)); n != 2 {
		t.Errorf("%d tickets in all, want 2 (one per mail)", n)
	}
}

// waitOutcomes waits until n mails with msgID have had their outcome (a
// ticket, an appended reply or a skip) and returns those events.
func waitOutcomes(t *testing.T, api apiClient, msgID string, n int) []loggedEvent {
	t.Helper()
	var got []loggedEvent
	for range 600 {
		got = got[:0]
		mails := map[string]bool{}
		for _, e := range api.events(domain.MailReceivedName) {
			if m := payload[domain.MailReceived](t, e); m.MessageID == msgID {
				mails[m.MailID] = true
			}
		}
		for _, e := range api.events(domain.TicketCreatedName, domain.MailAppendedName, domain.MailSkippedName) {
			var cause struct {
				CausedBy string `json:"caused_by"`
				MailID   string `json:"mail_id"`
			}
			_ = json.Unmarshal(e.Payload, &cause)
			if mails[cause.CausedBy] || mails[cause.MailID] {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%d outcomes for %s after 60s, want %d; log: %v", len(got), msgID, n, api.typeCounts())
	return nil
}

// TestSeeds_ImagesAsAttachmentsThroughServe: an account's
// images_as_attachments reaches its mails: the agent's body has no inline
// image and the attachment list has it, not inline.
func TestSeeds_ImagesAsAttachmentsThroughServe(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot")
	}
	t.Parallel()
	dv := dovecottest.Start(t)
	dv.AddUser(t, "img", "pw")
	srv := startServe(t, map[string]string{envDataDir: t.TempDir(), envAdminToken: e2eToken})
	api := apiClient{tb: t, base: srv.URL}
	imapAccount(t, api, dv, "images", "img", "pw", "img@desk.example", map[string]any{"images_as_attachments": true})
	dv.Deliver(t, "img", []byte(strings.Join([]string{
		"From: Erika <erika@customer.example>", "To: img@desk.example", "Subject: Screenshot",
		"Message-ID: <shot@customer.example>", "MIME-Version: 1.0", `Content-Type: multipart/related; boundary="r"`, "",
		"--r", "Content-Type: text/html; charset=utf-8", "",
		`<p>See <img src="cid:shot.1@customer.example" alt="screenshot"> here.</p>`,
		"--r", "Content-Type: image/png", "Content-ID: <shot.1@customer.example>", "Content-Transfer-Encoding: base64", "",
		"iVBORw0KGgo=", "--r--", ""}, "\r\n")))
	ev := api.waitEvents(domain.TicketCreatedName, 1)[0]
	created := payload[domain.TicketCreated](t, ev)
	base := "/api/v1/tickets/" + created.TicketID + "/articles/1"
	// min_position: the ticket view may not have caught up with the log yet.
	after := "?min_position=" + strconv.FormatInt(ev.Position, 10)
	var body struct {
		HTML                string `json:"html"`
		ImagesAsAttachments bool   `json:"images_as_attachments"`
	}
	if err := json.Unmarshal(api.must(http.MethodGet, base+"/body"+after, nil), &body); err != nil {
		t.Fatal(err)
	}
	if !body.ImagesAsAttachments || strings.Contains(body.HTML, "screenshot") || !strings.Contains(body.HTML, "See") {
		t.Errorf("body = %+v, want the HTML without the inline image", body)
	}
	var list struct {
		Items []struct {
			ContentID string `json:"content_id"`
			Inline    bool   `json:"inline"`
		} `json:"items"`
	}
	if err := json.Unmarshal(api.must(http.MethodGet, base+"/attachments"+after, nil), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].ContentID != "shot.1@customer.example" || list.Items[0].Inline {
		t.Errorf("attachments = %+v, want the screenshot as an attachment, not inline", list.Items)
	}
}
