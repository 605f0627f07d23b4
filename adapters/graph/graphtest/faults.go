package graphtest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Request is one request as the fake received it.
type Request struct {
	Method string
	// Path is the unescaped path, e.g. /v1.0/users/a@example.org/messages/AAk.../$value.
	Path  string
	Query url.Values
	// Mailbox is the lower-case address of the mailbox addressed, "" when
	// none (or an unknown one).
	Mailbox string
	// Prefer is the Prefer header as sent, all values joined by ", ".
	Prefer string
	// ImmutableID says whether Prefer asked for IdType="ImmutableId".
	ImmutableID bool
	// Token is the Bearer token sent, "" when none.
	Token string
	// Status is the answer's HTTP status.
	Status int
	// Batch is the id, within its JSON batch, of a request that came in a
	// batch; "" for a request of its own. The batch itself is recorded too,
	// as POST /v1.0/$batch.
	Batch string
}

// Download says whether the request fetched a message's raw MIME.
func (r Request) Download() bool { return strings.HasSuffix(r.Path, "/$value") }

// Fault is a scripted answer that replaces the normal one.
type Fault struct {
	Status int
	// RetryAfter is the Retry-After header's value; "" sends none.
	RetryAfter string
	// ContentType and Body replace Graph's JSON error when Body is set.
	ContentType, Body string
	// Code and Message go into Graph's JSON error otherwise.
	Code, Message string
}

type scriptedFault struct {
	left  int
	match func(Request) bool
	fault Fault
}

// FailNext answers the next n requests that match (nil matches any) with f
// instead of serving them. The request is still recorded and counted.
func (s *Server) FailNext(n int, match func(Request) bool, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &scriptedFault{left: n, match: match, fault: f})
}

// Throttle answers the next n requests with status (429 or 503) and a
// Retry-After of retryAfter ("" for none), with Graph's words.
func (s *Server) Throttle(n, status int, retryAfter string) {
	f := Fault{Status: status, RetryAfter: retryAfter, Code: "ApplicationThrottled",
		Message: "Application is over its MailboxConcurrency limit."}
	if status == http.StatusServiceUnavailable {
		f.Code, f.Message = "ServiceUnavailable", "The service is temporarily unavailable. Please retry later."
	}
	s.FailNext(n, nil, f)
}

// HTMLErrorPage answers the next n requests with status and an HTML page,
// as a proxy or load balancer in front of Graph does.
func (s *Server) HTMLErrorPage(n, status int) {
	s.FailNext(n, nil, Fault{Status: status, ContentType: "text/html; charset=utf-8",
		Body: "<!DOCTYPE html>\n<html><head><title>" + http.StatusText(status) + "</title></head>\n" +
			"<body><h1>" + http.StatusText(status) + "</h1><p>The proxy server received an invalid response from an upstream server.</p></body></html>\n"})
}

// RejectTokensSeen makes every token presented so far invalid: the next
// request with one gets 401 InvalidAuthenticationToken, so a client must
// get a fresh token to go on.
func (s *Server) RejectTokensSeen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok := range s.seen {
		s.rejected[tok] = true
	}
}

// VanishOnDownload makes a message disappear when its raw MIME is asked
// for: the request gets 404 ErrorItemNotFound, as when another client
// deletes the mail between a listing and a download.
func (s *Server) VanishOnDownload(address, immutableID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vanish[strings.ToLower(address)+"\x00"+immutableID] = true
}

// Deny answers every request to a mailbox with 403 and Graph's words for
// an app that lacks Mail.ReadWrite or that an application access policy
// keeps out: ErrorAccessDenied "Access is denied. Check credentials and
// try again.".
func (s *Server) Deny(address string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[strings.ToLower(address)] = graphError{status: http.StatusForbidden, code: "ErrorAccessDenied",
		message: "Access is denied. Check credentials and try again."}
}

// Allow undoes Deny.
func (s *Server) Allow(address string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.denied, strings.ToLower(address))
}

// OnRequest runs fn before each request is served, outside the fake's
// lock, so fn may change the mailboxes (e.g. Remove a message).
func (s *Server) OnRequest(fn func(Request)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onRequest = fn
}

// Requests returns every request received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// RequestCount is the number of requests received so far.
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// WithoutImmutableID returns the requests that did not carry
// Prefer: IdType="ImmutableId".
func (s *Server) WithoutImmutableID() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.requests {
		if !r.ImmutableID {
			out = append(out, r)
		}
	}
	return out
}

// PeakConcurrency is the largest number of requests one mailbox had in
// flight at once, those answered 429 for it included.
func (s *Server) PeakConcurrency(address string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak[strings.ToLower(address)]
}

// InFlight is the number of requests of a mailbox being served now; a
// client killed mid-request still counts until its handler notices.
func (s *Server) InFlight(address string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[strings.ToLower(address)]
}

// ResetCounters forgets the recorded requests and concurrency peaks.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
	s.peak = map[string]int{}
}

// StaticToken is a CheckToken that accepts exactly the given tokens.
func StaticToken(tokens ...string) func(string) bool {
	return func(tok string) bool {
		for _, t := range tokens {
			if tok == t {
				return true
			}
		}
		return false
	}
}

// Introspection is a CheckToken that asks an RFC 7662 introspection
// endpoint (such as oauthtest's URL+"/introspect") whether a token is
// active, and remembers an active one until the expiry it was told.
func Introspection(endpoint string) func(string) bool {
	var mu sync.Mutex
	active := map[string]time.Time{}
	client := &http.Client{Timeout: 10 * time.Second}
	return func(tok string) bool {
		mu.Lock()
		exp, ok := active[tok]
		mu.Unlock()
		if ok && time.Now().Before(exp) {
			return true
		}
		resp, err := client.PostForm(endpoint, url.Values{"token": {tok}})
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var got struct {
			Active bool  `json:"active"`
			Exp    int64 `json:"exp"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&got) != nil || !got.Active {
			return false
		}
		until := time.Now().Add(time.Minute)
		if got.Exp > 0 {
			until = time.Unix(got.Exp, 0)
		}
		mu.Lock()
		active[tok] = until
		mu.Unlock()
		return true
	}
}
