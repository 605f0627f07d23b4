package graph

import (
	"encoding/json"
	"mime"
	"strings"
)

// ErrorAnswer is the body of Graph's error answers,
// {"error":{"code","message"}}, with code and message verbatim. See
// https://learn.microsoft.com/graph/errors.
type ErrorAnswer struct {
	// Code is Graph's error.code (ErrorItemNotFound, ApplicationThrottled,
	// ErrorInvalidRecipients, ...).
	Code    string
	Message string
}

// DecodeError reads Graph's error JSON from an answer's body. contentType
// is the answer's Content-Type: one that is not JSON means the answer is
// not Graph's; an absent one is accepted (answers inside a $batch carry
// their headers apart, and some proxies drop it). ok is false when body is
// not Graph's error JSON with a code; describe it with Excerpt then.
func DecodeError(contentType string, body []byte) (_ ErrorAnswer, ok bool) {
	if contentType != "" && !IsJSON(contentType) {
		return ErrorAnswer{}, false
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
		return ErrorAnswer{}, false
	}
	return ErrorAnswer{Code: e.Error.Code, Message: e.Error.Message}, true
}

// IsJSON says whether contentType is JSON as Graph sends it:
// application/json, or a structured type ending in +json.
func IsJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}
