package domain_test

import (
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// sampleEvents has one filled-in value of every event type.
func sampleEvents() []domain.Event {
	at := t0
	out := domain.OutgoingMail{OutgoingMailID: "out-1", MessageID: "ledgerdesk.x@y", InReplyTo: "a@b", References: []string{"a@b"}}
	return []domain.Event{
		domain.MailReceived{MailID: "m1", AccountID: accID, SourceKey: "7:1", BlobRef: "b", Size: 3, ReceivedAt: at,
			MessageID: "a@b", InReplyTo: "c@d", References: []string{"c@d"}, Subject: "s", From: domain.Address{Name: "n", Email: "e@f"},
			ReplyTo: []domain.Address{{Email: "r@f"}}, To: []domain.Address{{Email: "t@f"}}, Cc: []domain.Address{{Email: "c@f"}},
			DeliveredTo: []string{"t@f"}, ReturnPath: "e@f", ReturnPathEmpty: true, Date: at, AutoSubmitted: "no", Precedence: "bulk",
			LoopHeaders: map[string]string{"list-id": "x"}, ContentType: "multipart/report", ReportType: "delivery-status",
			BouncedMessageID: "z@y", TextBody: "t", HTMLBody: "<p>t</p>",
			Attachments: []domain.Attachment{{PartPath: "2", Filename: "a.pdf", ContentType: "application/pdf", ContentID: "cid", Size: 9, Inline: true}},
			Warnings:    []string{"w"}},
		domain.MailFailed{MailID: "m1", AccountID: accID, SourceKey: "7:1", Size: 9, ReceivedAt: at, Reason: "too big", Oversize: true},
		domain.MailSkipped{MailID: "m1", AccountID: accID, SourceKey: "7:1", ReceivedAt: at, Code: domain.SkipOtherAccount, Reason: "r", ImportedBy: "x"},
		domain.MailboxPolled{AccountID: accID, StartedAt: at, FinishedAt: at, Fetched: 1, Error: "e", ServerReply: "NO"},
		domain.MailboxDeliveryChanged{AccountID: accID, Delivery: domain.DeliveryPolled, At: at, Reason: "r"},
		ticketCreated(),
		domain.MailAppended{TicketID: "t", MessageID: "a@b", From: domain.Address{Email: "e@f"}, Subject: "s", MailReceivedAt: at, At: at, CausedBy: "m1"},
		domain.MailBundled{TicketID: "t", MessageID: "a@b", Subject: "s", MailReceivedAt: at, TicketInterval: 1, MailInterval: 2, IntervalSeconds: 300, At: at, CausedBy: "m1"},
		domain.MailRejected{TicketID: "t", Code: domain.RejectTicketClosed, Reason: "r", At: at, CausedBy: "m1"},
		domain.TicketReactivated{TicketID: "t", Status: domain.StatusConfirmedUnread, ClosedAt: at, WindowSeconds: 5, At: at, CausedBy: "m1"},
		domain.StatusLeftUnchanged{TicketID: "t", Status: domain.StatusWaiting, Code: domain.UnchangedResourceMember, Reason: "r", At: at, CausedBy: "m1"},
		domain.TicketStatusChanged{TicketID: "t", From: domain.StatusNew, To: domain.StatusWaiting, At: at, Actor: "a"},
		domain.TicketAssigned{TicketID: "t", ResourceID: "r", Previous: "p", At: at, Actor: "a"},
		domain.TicketClosed{TicketID: "t", From: domain.StatusWaiting, ClosedAt: at, Actor: "a"},
		domain.TicketReopened{TicketID: "t", Status: domain.StatusInProgress, At: at, Actor: "a"},
		domain.TicketCategoryChanged{TicketID: "t", Category: "c", Previous: "p", At: at, Actor: "a"},
		domain.TicketPriorityChanged{TicketID: "t", Priority: "high", Previous: "p", At: at, Actor: "a"},
		domain.NoteAdded{TicketID: "t", NoteID: "n", Text: "x", At: at, Actor: "a"},
		domain.DeliveryFailureRecorded{TicketID: "t", BouncedMessageID: "a@b", Reason: "r", At: at, CausedBy: "m1"},
		domain.UserAutoCreated{UserID: "u", UserName: "max", Email: "e@f", Name: "n", LocationID: "l", At: at, CausedBy: "m1"},
		domain.UserCreated{UserID: "u", UserName: "max", Email: "e@f", At: at, Actor: "a"},
		domain.UserUpdated{UserID: "u", Email: "e@f", Name: "n", At: at, Actor: "a"},
		domain.LocationAutoCreated{LocationID: "l", Name: "f", Domain: "f", At: at, CausedBy: "m1"},
		domain.LocationCreated{LocationID: "l", Name: "f", Domain: "f", At: at, Actor: "a"},
		domain.UserRemoved{UserID: "u", At: at, Actor: "a"},
		domain.LocationUpdated{LocationID: "l", Name: "g", Domain: "g", At: at, Actor: "a"},
		domain.LocationRemoved{LocationID: "l", At: at, Actor: "a"},
		domain.ResourceCreated{Resource: domain.Resource{ID: "r", Name: "1st level", Members: []string{"u"}, OutboundAccountID: "out-1"}, Actor: "a"},
		domain.ResourceUpdated{Resource: domain.Resource{ID: "r", Name: "2nd level", Members: []string{}}, Changed: []string{"name"}, Actor: "a"},
		domain.ResourceDeleted{ResourceID: "r", Actor: "a"},
		domain.ErrorMailQueued{OutgoingMail: out, TicketID: "t", AccountID: accID, Template: domain.TemplateError, To: domain.Address{Email: "e@f"}, Subject: "s", Reason: "r", QueuedAt: at, CausedBy: "m1"},
		domain.AutoReplyQueued{OutgoingMail: out, TicketID: "t", AccountID: accID, Template: "x", To: domain.Address{Email: "e@f"}, Subject: "s", QueuedAt: at, CausedBy: "m1"},
		domain.NotificationQueued{OutgoingMail: out, TicketID: "t", Kind: domain.AutoMailCustomerAnswered, ResourceID: "r", QueuedAt: at, CausedBy: "m1",
			To: []domain.Address{{Name: "n", Email: "e@f"}}, Subject: "s"},
		domain.AutoMailSuppressed{TicketID: "t", Kind: domain.AutoMailNewTicket, To: "e@f", Reason: "r", At: at, CausedBy: "m1"},
		domain.ReplyQueued{OutgoingMail: out, TicketID: "t", To: []domain.Address{{Email: "e@f"}}, Subject: "s", Body: "b", QueuedAt: at, Actor: "a"},
		domain.InboundAccountCreated{Account: supportAccount(), Actor: "a"},
		domain.InboundAccountUpdated{Account: supportAccount(), Changed: []string{"host"}, Actor: "a"},
		domain.InboundAccountDeleted{AccountID: accID, Actor: "a"},
		domain.OutboundAccountCreated{Account: smtpAccount("out-1"), Actor: "a"},
		domain.OutboundAccountUpdated{Account: smtpAccount("out-1"), Changed: []string{"port"}, Actor: "a"},
		domain.OutboundAccountDeleted{AccountID: "out-1", Actor: "a"},
		domain.SettingsChanged{Settings: testSettings(), Actor: "a"},
		domain.APITokenIssued{TokenID: "k", Name: "n", Role: domain.RoleAgent, Hash: strings.Repeat("a", 64), IssuedBy: "a"},
		domain.APITokenRevoked{TokenID: "k", RevokedBy: "a"},
		domain.OutboundMailSent{OutgoingMailID: "o", MessageID: "a@b", TicketID: "t", Kind: domain.AutoMailNewTicket, AccountID: "out-1", From: "s@d", To: []string{"e@f"}, Subject: "s", Attempt: 1, Reply: "ok", SentAt: at},
		domain.OutboundMailFailed{OutgoingMailID: "o", MessageID: "a@b", TicketID: "t", Kind: domain.OutgoingReply, AccountID: "out-1", To: []string{"e@f"}, Attempt: 2, Stage: "rcpt", Code: 451, Reply: "later", NextAttemptAt: at, At: at},
		domain.OutboundMailSuppressed{OutgoingMailID: "o", TicketID: "t", Kind: domain.AutoMailError, To: "e@f", Code: domain.SuppressRecipientLimit, Reason: "r", At: at},
		domain.TemplateSaved{Template: domain.Template{Name: "default", Subject: "{{.Subject}}", Body: "b", UpdatedAt: at, UpdatedBy: "a"}, Actor: "a"},
		domain.OAuthConnectionCreated{Connection: domain.OAuthConnection{ID: "c1", Name: "M365", Provider: "microsoft365", Flow: "delegated",
			TenantID: "contoso.onmicrosoft.com", ClientID: "cid", ClientSecret: "sealed", LoginBaseURL: domain.DefaultMicrosoftLoginBaseURL}, Actor: "a"},
		domain.OAuthConnectionUpdated{Connection: domain.OAuthConnection{ID: "c1", Name: "Custom", Provider: "custom", Flow: "delegated",
			ClientID: "cid", AuthorizationURL: "https://idp/a", TokenURL: "https://idp/t", Scopes: []string{"mail"}}, Changed: []string{"name"}, Actor: "a"},
		domain.OAuthConnectionDeleted{ConnectionID: "c1", Actor: "a"},
		domain.OAuthConnectionAuthorized{ConnectionID: "c1", RefreshToken: "sealed", Scopes: []string{"s"}, AccessTokenExpiresAt: at, At: at, Actor: "a"},
		domain.OAuthTokenRefreshed{ConnectionID: "c1", RefreshToken: "sealed", Scopes: []string{"s"}, AccessTokenExpiresAt: at, At: at},
		domain.OAuthRefreshTokenResealed{ConnectionID: "c1", RefreshToken: "sealed", At: at, Actor: "system:secret-key-rotation"},
		domain.OAuthTokenRefreshFailed{ConnectionID: "c1", ErrorCode: "invalid_grant", Error: "AADSTS70008: expired", NeedsReconnect: true, At: at},
		domain.SubscriberEventSetAside{Subscriber: "process.mail-intake.v1", Position: 42, EventID: "e1", EventType: domain.MailReceivedName,
			Stream: "mail-m1", AccountID: accID, Attempts: 5, Error: "index row size exceeds maximum", At: at},
		domain.SubscriberEventRetried{Subscriber: "process.mail-intake.v1", Position: 42, EventID: "e1", EventType: domain.MailReceivedName,
			AccountID: accID, Actor: "admin:cli", At: at},
	}
}

func TestMarshalEvent_roundTrip(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, e := range sampleEvents() {
		name, version, payload, err := domain.MarshalEvent(e)
		if err != nil {
			t.Fatalf("MarshalEvent(%T) error = %v", e, err)
		}
		seen[name] = true
		if goName := reflect.TypeOf(e).Name(); name != goName {
			t.Errorf("MarshalEvent(%T) name = %q, want the Go type name %q on the day it was added", e, name, goName)
		}
		if version < 1 {
			t.Errorf("MarshalEvent(%T) version = %d", e, version)
		}
		checkSnakeCase(t, name, payload)
		got, err := domain.UnmarshalEvent(name, version, payload)
		if err != nil {
			t.Fatalf("UnmarshalEvent(%q) error = %v", name, err)
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Errorf("UnmarshalEvent(MarshalEvent(%T)) (-want +got):\n%s", e, diff)
		}
	}
	names := domain.EventNames()
	slices.Sort(names)
	for _, n := range names {
		if !seen[n] {
			t.Errorf("registered event %q has no sample in sampleEvents", n)
		}
	}
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// checkSnakeCase walks the payload's object keys (except LoopHeaders'
// header names, which are data).
func checkSnakeCase(tb testing.TB, name string, payload []byte) {
	tb.Helper()
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		tb.Fatalf("%s payload: %v", name, err)
	}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if key == "loop_headers" {
				return
			}
			for k, x := range v {
				if !snakeCase.MatchString(k) {
					tb.Errorf("%s: JSON field %q is not snake_case", name, k)
				}
				walk(k, x)
			}
		case []any:
			for _, x := range v {
				walk(key, x)
			}
		}
	}
	walk("", v)
}

// TestEventRegistry_complete parses the package and checks that every type
// with an EventName method is registered, so no event is stored that
// UnmarshalEvent cannot read.
func TestEventRegistry_complete(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var types []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || fd.Name.Name != "EventName" {
				continue
			}
			if id, ok := fd.Recv.List[0].Type.(*ast.Ident); ok {
				types = append(types, id.Name)
			}
		}
	}
	registered := domain.EventNames()
	if len(types) != len(registered) {
		t.Errorf("%d types have EventName, %d names are registered", len(types), len(registered))
	}
	for _, typ := range types {
		if !slices.Contains(registered, typ) {
			t.Errorf("event type %s is not registered in codec.go", typ)
		}
	}
}

func TestUnmarshalEvent_errors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		event   string
		version int
		payload string
		want    error
	}{
		{"an unknown name", "TicketTeleported", 1, `{}`, domain.ErrUnknownEvent},
		{"a version newer than the code", domain.MailReceivedName, domain.MailReceivedSchemaVersion + 1, `{}`, domain.ErrUnsupportedSchemaVersion},
		{"version zero", domain.MailReceivedName, 0, `{}`, domain.ErrUnsupportedSchemaVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := domain.UnmarshalEvent(tc.event, tc.version, []byte(tc.payload))
			if !errors.Is(err, tc.want) {
				t.Fatalf("UnmarshalEvent() error = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.event) {
				t.Errorf("UnmarshalEvent() error = %q, want it to name %q", err, tc.event)
			}
		})
	}
	if _, err := domain.UnmarshalEvent(domain.MailReceivedName, 1, []byte(`{"mail_id": 5}`)); err == nil {
		t.Error("UnmarshalEvent() of a malformed payload: error = nil")
	}
}

// TestUnmarshalEvent_upcastsTicketCreatedV1 reads a version 1 TicketCreated
// (flat requester fields) as the current version.
func TestUnmarshalEvent_upcastsTicketCreatedV1(t *testing.T) {
	t.Parallel()
	v1 := `{"ticket_id":"t1","number":1001,"reference":"[Ticket#1001]","subject":"Printer broken","status":"new",
		"requester_user_id":"u-max","requester_email":"max@customer.example","requester_name":"Max",
		"account_id":"acc","message_id":"a@b","sender_email":"max@customer.example",
		"mail_received_at":"2026-03-02T10:00:00Z","created_at":"2026-03-02T10:00:01Z","caused_by":"m1"}`
	got, err := domain.UnmarshalEvent(domain.TicketCreatedName, 1, []byte(v1))
	if err != nil {
		t.Fatalf("UnmarshalEvent(v1) error = %v", err)
	}
	want := domain.TicketCreated{
		TicketID: "t1", Number: 1001, Reference: "[Ticket#1001]", Subject: "Printer broken", Status: domain.StatusNew,
		Requester: domain.Requester{UserID: "u-max", Email: customer, Name: "Max", Source: domain.RequesterDirectory},
		AccountID: "acc", MessageID: "a@b", SenderEmail: customer,
		MailReceivedAt: t0, CreatedAt: t0.Add(time.Second), CausedBy: "m1",
	}
	if diff := cmp.Diff(domain.Event(want), got); diff != "" {
		t.Errorf("UnmarshalEvent(v1) (-want +got):\n%s", diff)
	}
	if domain.TicketCreatedSchemaVersion != 2 {
		t.Errorf("TicketCreatedSchemaVersion = %d; a new version needs a new upcaster and test", domain.TicketCreatedSchemaVersion)
	}
	noUser := `{"ticket_id":"t2","requester_email":"x@y.example"}`
	got, err = domain.UnmarshalEvent(domain.TicketCreatedName, 1, []byte(noUser))
	if err != nil {
		t.Fatal(err)
	}
	if r := got.(domain.TicketCreated).Requester; r != (domain.Requester{Email: "x@y.example", Source: domain.RequesterAddress}) {
		t.Errorf("upcast requester without user = %+v, want the bare address", r)
	}
}

func TestMarshalEvent_unregistered(t *testing.T) {
	t.Parallel()
	if _, _, _, err := domain.MarshalEvent(strayEvent{}); !errors.Is(err, domain.ErrUnknownEvent) {
		t.Errorf("MarshalEvent(unregistered) error = %v, want ErrUnknownEvent", err)
	}
	if _, _, _, err := domain.MarshalEvent(nil); !errors.Is(err, domain.ErrUnknownEvent) {
		t.Errorf("MarshalEvent(nil) error = %v, want ErrUnknownEvent", err)
	}
}

type strayEvent struct{}

func (strayEvent) EventName() string { return "StrayEvent" }
