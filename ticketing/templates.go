package ticketing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/template"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// TemplatesStream is the stream of the mail templates registry.
const TemplatesStream = "templates"

// Names of the shipped templates. Each exists bilingual (German first, then
// English) under its plain name and in one language under name.de and
// name.en. A stored template of the same name replaces the shipped one.
const (
	TemplateDefault      = "default"                   // auto-reply on a new ticket
	TemplateError        = domain.TemplateError        // reply-only account
	TemplateTicketClosed = domain.TemplateTicketClosed // answer to a ticket closed too long ago
	TemplateReply        = "reply"                     // frame of an agent's reply
	// TemplateCustomerAnswered tells the members of a ticket's resource
	// that the customer answered (the intake's NotificationQueued).
	TemplateCustomerAnswered = domain.AutoMailCustomerAnswered
)

// TemplateData is what a template can use, e.g. {{.TicketNumber}} or
// {{.RequesterName}}. Fields are only added, never renamed, so stored
// templates keep working.
type TemplateData struct {
	TicketNumber int64  // 1001; 0 for mail that concerns no ticket
	Reference    string // "[Ticket#1001]"; "" without a ticket
	// Subject is the outgoing subject as queued, with the ticket reference.
	Subject        string
	RequesterName  string
	RequesterEmail string
	SenderName     string // the sending account's display name
	SenderAddress  string
	Body           string // an agent's reply text
	Reason         string // why an error mail is sent
}

// sampleData checks that a template only uses fields that exist.
var sampleData = TemplateData{TicketNumber: 1001, Reference: "[Ticket#1001]", Subject: "[Ticket#1001] Printer",
	RequesterName: "Erika Muster", RequesterEmail: "erika@customer.example", SenderName: "Support",
	SenderAddress: "support@desk.example", Body: "text", Reason: "reason"}

var shipped = func() map[string]domain.Template {
	type text struct{ subject, de, en string }
	texts := map[string]text{
		TemplateDefault: {"{{.Subject}}",
			"Guten Tag{{if .RequesterName}} {{.RequesterName}}{{end}},\n\nvielen Dank für Ihre Nachricht. Wir haben sie unter der Ticketnummer {{.TicketNumber}} erfasst und melden uns so bald wie möglich.\nBitte lassen Sie bei Antworten {{.Reference}} im Betreff stehen.\n\nMit freundlichen Grüßen\n{{.SenderName}}\n",
			"Hello{{if .RequesterName}} {{.RequesterName}}{{end}},\n\nthank you for your message. We have recorded it as ticket number {{.TicketNumber}} and will get back to you as soon as possible.\nPlease keep {{.Reference}} in the subject when you reply.\n\nKind regards\n{{.SenderName}}\n"},
		TemplateError: {"{{.Subject}}",
			"Guten Tag{{if .RequesterName}} {{.RequesterName}}{{end}},\n\nIhre Nachricht konnte nicht verarbeitet werden: Über diese Adresse können nur Antworten auf bestehende Tickets angenommen werden.\n\nMit freundlichen Grüßen\n{{.SenderName}}\n",
			"Hello{{if .RequesterName}} {{.RequesterName}}{{end}},\n\nyour message could not be processed: this address only accepts replies to existing tickets.\n\nKind regards\n{{.SenderName}}\n"},
		TemplateTicketClosed: {"{{.Subject}}",
			"Guten Tag{{if .RequesterName}} {{.RequesterName}}{{end}},\n\ndas Ticket {{.TicketNumber}} ist bereits abgeschlossen, Ihre Nachricht wurde ihm daher nicht mehr zugeordnet. Bitte schreiben Sie uns ohne {{.Reference}} im Betreff, um ein neues Ticket zu eröffnen.\n\nMit freundlichen Grüßen\n{{.SenderName}}\n",
			"Hello{{if .RequesterName}} {{.RequesterName}}{{end}},\n\nticket {{.TicketNumber}} is already closed, so your message was not added to it. Please write to us without {{.Reference}} in the subject to open a new ticket.\n\nKind regards\n{{.SenderName}}\n"},
		TemplateReply: {"{{.Subject}}", "{{.Body}}\n\n-- \n{{.SenderName}}\n", "{{.Body}}\n\n-- \n{{.SenderName}}\n"},
		TemplateCustomerAnswered: {"{{.Subject}}",
			"{{if .RequesterName}}{{.RequesterName}}{{else}}{{.RequesterEmail}}{{end}} hat auf Ticket {{.TicketNumber}} geantwortet; das Ticket wartet auf Sie.\n",
			"{{if .RequesterName}}{{.RequesterName}}{{else}}{{.RequesterEmail}}{{end}} answered on ticket {{.TicketNumber}}; the ticket waits for you.\n"},
	}
	out := map[string]domain.Template{}
	for name, t := range texts {
		out[name+".de"] = domain.Template{Name: name + ".de", Subject: t.subject, Body: t.de, UpdatedBy: "shipped"}
		out[name+".en"] = domain.Template{Name: name + ".en", Subject: t.subject, Body: t.en, UpdatedBy: "shipped"}
		both := t.de + "\n---\n\n" + t.en
		if t.de == t.en {
			both = t.de
		}
		out[name] = domain.Template{Name: name, Subject: t.subject, Body: both, UpdatedBy: "shipped"}
	}
	return out
}()

// ErrTemplateNotFound is returned for a name that is neither stored nor
// shipped.
var ErrTemplateNotFound = errors.New("template not found")

// CheckTemplate parses subject and body and runs them on sample data, so
// that a template naming a field that does not exist is refused when it is
// saved rather than when a mail is due.
func CheckTemplate(subject, body string) error {
	_, _, err := render(domain.Template{Name: "check", Subject: subject, Body: body}, sampleData)
	return err
}

// parsed caches parsed templates by their text: parsing costs more than
// executing, and templates change rarely (the cache only grows by edits).
var parsed sync.Map // string -> *template.Template

func parse(name, part, src string) (*template.Template, error) {
	key := part + "\x00" + src
	if t, ok := parsed.Load(key); ok {
		return t.(*template.Template), nil
	}
	t, err := template.New(name + "." + part).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, err
	}
	parsed.Store(key, t)
	return t, nil
}

func render(t domain.Template, data TemplateData) (subject, body string, err error) {
	var errs []error
	run := func(part, src string) string {
		tpl, err := parse(t.Name, part, src)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", part, err))
			return ""
		}
		var b bytes.Buffer
		if err := tpl.Execute(&b, data); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", part, err))
			return ""
		}
		return b.String()
	}
	subject = strings.Join(strings.Fields(run("subject", t.Subject)), " ")
	body = run("body", t.Body)
	if err := errors.Join(errs...); err != nil {
		return "", "", fmt.Errorf("template %q: %w", t.Name, err)
	}
	return subject, body, nil
}

// Templates reads the stored templates over the shipped ones.
type Templates struct {
	store eventstore.Store
	mu    sync.Mutex
	reg   fold[domain.Templates]
}

// NewTemplates returns the templates of store.
func NewTemplates(store eventstore.Store) *Templates {
	return &Templates{store: store, reg: fold[domain.Templates]{stream: TemplatesStream, evolve: domain.EvolveTemplates}}
}

func (ts *Templates) load(ctx context.Context) (domain.Templates, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.reg.load(ctx, ts.store.ReadStream)
}

// Get returns the stored template name, else the shipped one.
func (ts *Templates) Get(ctx context.Context, name string) (domain.Template, error) {
	s, err := ts.load(ctx)
	if err != nil {
		return domain.Template{}, fmt.Errorf("ticketing: templates: %w", err)
	}
	if t, ok := s.ByName[name]; ok {
		return t, nil
	}
	if t, ok := shipped[name]; ok {
		return t, nil
	}
	return domain.Template{}, fmt.Errorf("ticketing: template %q: %w", name, ErrTemplateNotFound)
}

// List returns every template, stored over shipped, by name.
func (ts *Templates) List(ctx context.Context) ([]domain.Template, error) {
	s, err := ts.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("ticketing: templates: %w", err)
	}
	all := map[string]domain.Template{}
	for n, t := range shipped {
		all[n] = t
	}
	for n, t := range s.ByName {
		all[n] = t
	}
	out := make([]domain.Template, 0, len(all))
	for _, t := range all {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b domain.Template) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Save checks and stores t (UpdatedAt set by the caller) and returns the
// global position of the event, 0 when nothing changed.
func (ts *Templates) Save(ctx context.Context, t domain.Template, actor string) (int64, error) {
	if err := CheckTemplate(t.Subject, t.Body); err != nil {
		return 0, fmt.Errorf("ticketing: save template: %w: %w", domain.ErrInvalid, err)
	}
	var pos int64
	err := ts.store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		evs, err := tx.ReadStream(ctx, TemplatesStream, 1, 0)
		if err != nil {
			return err
		}
		var s domain.Templates
		for _, re := range evs {
			ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
			if err != nil {
				return err
			}
			s = domain.EvolveTemplates(s, ev)
		}
		out, err := domain.DecideSaveTemplate(s, t, actor)
		if err != nil || len(out) == 0 {
			return err
		}
		name, version, payload, err := domain.MarshalEvent(out[0])
		if err != nil {
			return err
		}
		res, err := tx.Append(ctx, eventstore.AppendRequest{Stream: TemplatesStream, ExpectedVersion: int64(len(evs)),
			Events: []eventstore.NewEvent{{Type: name, SchemaVersion: version, Payload: payload,
				Metadata: eventstore.Metadata{Actor: actor, OccurredAt: t.UpdatedAt}}}})
		if err != nil {
			return err
		}
		pos = res.LastPosition
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ticketing: save template %q: %w", t.Name, err)
	}
	return pos, nil
}
