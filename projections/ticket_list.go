package projections

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sort orders of ListTickets; a leading "-" sorts descending. Every order
// ends on number, which is unique, so keyset pages never skip or repeat.
var TicketSorts = []string{"number", "-number", "created_at", "-created_at", "updated_at", "-updated_at"}

// DefaultTicketSort lists the newest tickets first.
const DefaultTicketSort = "-number"

// TicketFilter selects tickets for ListTickets. Empty fields do not filter.
type TicketFilter struct {
	Status, Requester, Resource, Category, Priority string
	CreatedAfter, CreatedBefore                     time.Time // exclusive bounds
	// Query matches a case-insensitive substring of the subject.
	Query string
	// Sort is one of TicketSorts; empty means DefaultTicketSort.
	Sort string
	// Limit is the page size (> 0); Cursor the NextCursor of the page before.
	Limit  int
	Cursor string
}

// ErrBadCursor is returned for a cursor ListTickets did not give out, or one
// given out for another sort order.
var ErrBadCursor = errors.New("projections: invalid cursor")

// ErrBadSort is returned for a sort order not in TicketSorts.
var ErrBadSort = errors.New("projections: unknown sort order")

// cursor is the position after the last row of a page. It is opaque to
// clients: base64url of this JSON.
type cursor struct {
	Sort   string    `json:"s"`
	Number int64     `json:"n"`
	Time   time.Time `json:"t,omitzero"`
}

func encodeCursor(c cursor) string {
	b, _ := json.Marshal(c) // a cursor always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s, sort string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, ErrBadCursor
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || c.Sort != sort {
		return cursor{}, ErrBadCursor
	}
	c.Time = c.Time.UTC()
	return c, nil
}

// TicketPage is one page of ListTickets; NextCursor is empty on the last.
type TicketPage struct {
	Items      []Ticket `json:"items"`
	NextCursor string   `json:"next_cursor"`
}

// ListTickets returns a page of tickets matching f in f.Sort order, using
// keyset pagination: the cursor holds the sort key of the page's last row.
func (p *Tickets) ListTickets(ctx context.Context, f TicketFilter) (TicketPage, error) {
	if f.Sort == "" {
		f.Sort = DefaultTicketSort
	}
	col, desc := strings.TrimPrefix(f.Sort, "-"), strings.HasPrefix(f.Sort, "-")
	switch col {
	case "number", "created_at", "updated_at":
	default:
		return TicketPage{}, fmt.Errorf("%w: %q", ErrBadSort, f.Sort)
	}
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	for _, eq := range []struct{ col, v string }{{"status", f.Status}, {"requester_email", strings.ToLower(f.Requester)},
		{"resource", f.Resource}, {"category", f.Category}, {"priority", f.Priority}} {
		if eq.v != "" {
			where = append(where, eq.col+" = "+arg(eq.v))
		}
	}
	if !f.CreatedAfter.IsZero() {
		where = append(where, "created_at > "+arg(f.CreatedAfter.UTC()))
	}
	if !f.CreatedBefore.IsZero() {
		where = append(where, "created_at < "+arg(f.CreatedBefore.UTC()))
	}
	if f.Query != "" {
		where = append(where, `lower(subject) LIKE `+arg("%"+escapeLike(strings.ToLower(f.Query))+"%")+` ESCAPE '\'`)
	}
	cmp, dir := ">", "ASC"
	if desc {
		cmp, dir = "<", "DESC"
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor, f.Sort)
		if err != nil {
			return TicketPage{}, err
		}
		if col == "number" {
			where = append(where, "number "+cmp+" "+arg(c.Number))
		} else {
			t, n := arg(c.Time), arg(c.Number)
			where = append(where, fmt.Sprintf("(%s %s %s OR (%s = %s AND number %s %s))", col, cmp, t, col, t, cmp, n))
		}
	}
	q := `SELECT ` + ticketColumns + ` FROM ` + p.tickets
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if col == "number" {
		q += " ORDER BY number " + dir
	} else {
		q += fmt.Sprintf(" ORDER BY %s %s, number %s", col, dir, dir)
	}
	q += " LIMIT " + arg(int64(f.Limit+1))
	rows, err := p.reader.Query(ctx, q, args...)
	if err != nil {
		return TicketPage{}, fmt.Errorf("projections: list tickets: %w", err)
	}
	defer func() { _ = rows.Close() }()
	page := TicketPage{Items: make([]Ticket, 0, f.Limit)}
	more := false
	for rows.Next() {
		if len(page.Items) == f.Limit {
			more = true
			break
		}
		t, err := scanTicket(rows)
		if err != nil {
			return TicketPage{}, fmt.Errorf("projections: list tickets: %w", err)
		}
		page.Items = append(page.Items, t)
	}
	if err := rows.Err(); err != nil {
		return TicketPage{}, fmt.Errorf("projections: list tickets: %w", err)
	}
	if more {
		last := page.Items[len(page.Items)-1]
		c := cursor{Sort: f.Sort, Number: last.Number}
		switch col {
		case "created_at":
			c.Time = last.CreatedAt
		case "updated_at":
			c.Time = last.UpdatedAt
		}
		page.NextCursor = encodeCursor(c)
	}
	return page, nil
}

// escapeLike escapes LIKE's wildcards and the escape character itself.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

func encodeOpaque(v any) string {
	b, _ := json.Marshal(v) // cursors always marshal
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeOpaque(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, v) != nil {
		return ErrBadCursor
	}
	return nil
}
