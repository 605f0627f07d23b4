package api

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// templateBody is a mail template as the API shows and takes it. Subject
// and body are Go text/template sources over ticketing.TemplateData
// ({{.TicketNumber}}, {{.Reference}}, {{.Subject}}, {{.RequesterName}},
// {{.RequesterEmail}}, {{.SenderName}}, {{.SenderAddress}}, {{.Body}},
// {{.Reason}}).
type templateBody struct {
	Name      string `json:"name"`
	Subject   string `json:"subject"`
	Body      string `json:"body"`
	Shipped   bool   `json:"shipped"`
	UpdatedAt string `json:"updated_at,omitempty"`
	UpdatedBy string `json:"updated_by,omitempty"`
}

func templateView(t domain.Template) templateBody {
	b := templateBody{Name: t.Name, Subject: t.Subject, Body: t.Body, Shipped: t.UpdatedBy == "shipped" && t.UpdatedAt.IsZero(), UpdatedBy: t.UpdatedBy}
	if !t.UpdatedAt.IsZero() {
		b.UpdatedAt = t.UpdatedAt.UTC().Format("2006-01-02T15:04:05Z07:00")
	}
	return b
}

func (s *server) listTemplates(c echo.Context) error {
	list, err := ticketing.NewTemplates(s.store).List(c.Request().Context())
	if err != nil {
		return err
	}
	items := make([]templateBody, 0, len(list))
	for _, t := range list {
		items = append(items, templateView(t))
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

func (s *server) getTemplate(c echo.Context) error {
	t, err := ticketing.NewTemplates(s.store).Get(c.Request().Context(), c.Param("name"))
	if errors.Is(err, ticketing.ErrTemplateNotFound) {
		return newProblem(http.StatusNotFound, "there is no template with this name")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, templateView(t))
}

// putTemplate stores a template under the path's name; a stored template
// replaces a shipped one of the same name.
func (s *server) putTemplate(c echo.Context) error {
	var body struct {
		Name    string `json:"name,omitempty"`
		Subject string `json:"subject"`
		Body    string `json:"body"`
		// read-only fields of a read, accepted and ignored
		Shipped   *bool  `json:"shipped,omitempty"`
		UpdatedAt string `json:"updated_at,omitempty"`
		UpdatedBy string `json:"updated_by,omitempty"`
	}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	name := c.Param("name")
	if body.Name != "" && body.Name != name {
		return invalid("name", "must match the path or be left out")
	}
	t := domain.Template{Name: name, Subject: body.Subject, Body: body.Body, UpdatedAt: s.opts.Now().UTC()}
	pos, err := ticketing.NewTemplates(s.store).Save(c.Request().Context(), t, principal(c).Actor())
	if errors.Is(err, domain.ErrInvalid) {
		return unprocessable(err)
	}
	if err != nil {
		return err
	}
	if pos > 0 {
		setPosition(c, pos)
	}
	t.UpdatedBy = principal(c).Actor()
	return c.JSON(http.StatusOK, map[string]any{"name": t.Name, "subject": t.Subject, "body": t.Body, "shipped": false,
		"updated_at": t.UpdatedAt.Format("2006-01-02T15:04:05Z07:00"), "updated_by": t.UpdatedBy, "position": pos})
}
