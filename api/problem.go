package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Errors names each field that was wrong (400 and 422).
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError is one problem with one field of a request.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// problemError is an error a handler answers with on purpose: its status,
// detail and field errors go to the client; cause only to the log.
type problemError struct {
	status int
	detail string
	fields []FieldError
	cause  error
}

func (e *problemError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %v", e.status, e.detail, e.cause)
	}
	return fmt.Sprintf("%d %s", e.status, e.detail)
}

func (e *problemError) Unwrap() error { return e.cause }

func newProblem(status int, format string, args ...any) *problemError {
	return &problemError{status: status, detail: fmt.Sprintf(format, args...)}
}

// invalid is a 400 naming one field.
func invalid(field, format string, args ...any) *problemError {
	d := fmt.Sprintf(format, args...)
	return &problemError{status: http.StatusBadRequest, detail: "the request is invalid: " + field + ": " + d,
		fields: []FieldError{{Field: field, Detail: d}}}
}

// unprocessable turns a domain validation error (errors.Join of
// "field: problem") into a 422 listing each problem.
func unprocessable(err error) *problemError {
	fields := fieldErrors(err)
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f.Field + ": " + f.Detail
	}
	return &problemError{status: http.StatusUnprocessableEntity,
		detail: "the request was understood but is not valid: " + strings.Join(parts, "; "), fields: fields}
}

// fieldErrors splits joined "field: problem" errors; one without a field
// prefix is reported under the field "".
func fieldErrors(err error) []FieldError {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []FieldError
	for _, e := range errs {
		if e == domain.ErrInvalid { //nolint:errorlint // the bare sentinel that marks the others, no field of its own
			continue
		}
		if _, ok := e.(interface{ Unwrap() []error }); ok {
			out = append(out, fieldErrors(e)...)
			continue
		}
		field, detail, found := strings.Cut(e.Error(), ": ")
		if !found || strings.ContainsAny(field, " \"") {
			field, detail = "", e.Error()
		}
		out = append(out, FieldError{Field: field, Detail: detail})
	}
	return out
}

// toProblem is the one place errors become HTTP answers. It reports whether
// the error is internal: then only the log learns its text.
func toProblem(err error, bodyLimit string) (Problem, bool) {
	p := Problem{Type: "about:blank"}
	var pe *problemError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &pe):
		p.Status, p.Detail, p.Errors = pe.status, pe.detail, pe.fields
	case errors.As(err, &he):
		p.Status = he.Code
		if msg, ok := he.Message.(string); ok && msg != http.StatusText(he.Code) {
			p.Detail = msg
		}
		switch {
		case he.Code == http.StatusRequestEntityTooLarge:
			p.Detail = "the request body is larger than the limit (" + bodyLimit + ")"
		case he.Code == http.StatusNotFound && p.Detail == "":
			p.Detail = "there is no such route; see /api/v1/openapi.json"
		case he.Code == http.StatusMethodNotAllowed && p.Detail == "":
			p.Detail = "the route does not accept this method; see /api/v1/openapi.json"
		}
	case errors.Is(err, eventstore.ErrVersionConflict):
		p.Status = http.StatusConflict
		p.Detail = "the resource was changed by someone else in the meantime; read it again and retry"
	case errors.Is(err, domain.ErrAccountNotFound):
		p.Status, p.Detail = http.StatusNotFound, "there is no inbound account with this id"
	case errors.Is(err, domain.ErrTokenUnknown):
		p.Status, p.Detail = http.StatusNotFound, "there is no active API token with this id"
	case errors.Is(err, domain.ErrAccountNameTaken):
		p.Status, p.Detail = http.StatusConflict, "another inbound account has this name"
		p.Errors = []FieldError{{Field: "name", Detail: "another inbound account has this name"}}
	default:
		p.Status, p.Detail = http.StatusInternalServerError, "an internal error occurred; it has been logged"
		p.Title = http.StatusText(p.Status)
		return p, true
	}
	p.Title = http.StatusText(p.Status)
	return p, p.Status >= 500
}

// problemHandler turns every error into application/problem+json.
func problemHandler(logger *slog.Logger, bodyLimit string) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p, internal := toProblem(err, bodyLimit)
		if internal {
			logger.Error("request failed", "method", c.Request().Method, "path", c.Path(), "status", p.Status, "err", err)
		} else if p.Status != http.StatusNotFound && p.Status != http.StatusUnauthorized && p.Status != http.StatusTooManyRequests {
			logger.Info("request refused", "method", c.Request().Method, "path", c.Path(), "status", p.Status, "err", err)
		}
		var werr error
		if c.Request().Method == http.MethodHead {
			werr = c.NoContent(p.Status)
		} else {
			body, _ := json.Marshal(p) // a Problem always marshals
			werr = c.Blob(p.Status, "application/problem+json", body)
		}
		if werr != nil {
			logger.Warn("write problem response", "err", werr)
		}
	}
}
