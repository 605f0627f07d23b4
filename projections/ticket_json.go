package projections

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends p as JSON to dst: the same bytes encoding/json gives
// for p (TestTicketPage_AppendJSON holds them equal), without reflection.
// GET /tickets serves up to 500 rows a request; this keeps the handler's
// cost near that of the query.
func (p TicketPage) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"items":[`...)
	for i := range p.Items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = p.Items[i].appendJSON(dst)
	}
	dst = append(dst, `],"next_cursor":`...)
	dst = appendJSONString(dst, p.NextCursor)
	return append(dst, '}')
}

func (t *Ticket) appendJSON(dst []byte) []byte {
	str := func(key, v string) {
		dst = append(dst, key...)
		dst = appendJSONString(dst, v)
	}
	str(`{"id":`, t.ID)
	dst = append(dst, `,"number":`...)
	dst = strconv.AppendInt(dst, t.Number, 10)
	str(`,"subject":`, t.Subject)
	str(`,"status":`, t.Status)
	str(`,"requester_email":`, t.RequesterEmail)
	str(`,"requester_name":`, t.RequesterName)
	str(`,"requester_user_id":`, t.RequesterUserID)
	str(`,"location_id":`, t.LocationID)
	str(`,"resource":`, t.Resource)
	str(`,"category":`, t.Category)
	str(`,"priority":`, t.Priority)
	str(`,"account_id":`, t.AccountID)
	dst = append(dst, `,"article_count":`...)
	dst = strconv.AppendInt(dst, t.ArticleCount, 10)
	dst = append(dst, `,"created_at":`...)
	dst = appendJSONTime(dst, t.CreatedAt)
	dst = append(dst, `,"updated_at":`...)
	dst = appendJSONTime(dst, t.UpdatedAt)
	dst = append(dst, `,"closed_at":`...)
	if t.ClosedAt == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendJSONTime(dst, *t.ClosedAt)
	}
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, t.Version, 10)
	return append(dst, '}')
}

// appendJSONTime is time.Time's MarshalJSON for the years 0 to 9999
// (RFC 3339 with nanoseconds as needed); the views hold no other.
func appendJSONTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does by default: ", \ and
// control characters escaped, <, > and & as \u003c, \u003e, \u0026 (HTML
// safe), U+2028 and U+2029 escaped, invalid UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
