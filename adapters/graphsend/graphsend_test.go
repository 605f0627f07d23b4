package graphsend_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/graphsend"
)

const rawMail = "From: desk@contoso.example\r\nTo: erika@customer.example\r\nMessage-ID: <ledgerdesk.t1.m1.k1@desk.example>\r\n" +
	"Subject: [Ticket#1001] Drucker\r\n\r\nHallo\r\n"

// request is what the fake sendMail endpoint saw.
type request struct {
	Method, Path, Auth, ContentType, Prefer string
	MIME                                    string
}

// answer is one scripted answer of the fake endpoint.
type answer struct {
	status int
	header map[string]string
	body   string
}

// fakeGraph is a sendMail endpoint on loopback that answers from a script
// (202 once the script is used up) and records every request.
type fakeGraph struct {
	*httptest.Server
	mu      sync.Mutex
	script  []answer
	reqs    []request
	badBody []string
}

func startGraph(t *testing.T, script ...answer) *fakeGraph {
	t.Helper()
	f := &fakeGraph{script: script}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		mime, err := base64.StdEncoding.DecodeString(string(data))
		f.mu.Lock()
		if err != nil {
			f.badBody = append(f.badBody, err.Error())
		}
		f.reqs = append(f.reqs, request{Method: r.Method, Path: r.URL.EscapedPath(), Auth: r.Header.Get("Authorization"),
			ContentType: r.Header.Get("Content-Type"), Prefer: r.Header.Get("Prefer"), MIME: string(mime)})
		a := answer{status: http.StatusAccepted, header: map[string]string{"request-id": "req-ok"}}
		if len(f.script) > 0 {
			a, f.script = f.script[0], f.script[1:]
		}
		f.mu.Unlock()
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeGraph) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func graphJSON(status int, code, message string, header ...string) answer {
	h := map[string]string{"Content-Type": "application/json; charset=utf-8", "request-id": "req-" + code}
	for i := 0; i+1 < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	return answer{status: status, header: h, body: fmt.Sprintf(`{"error":{"code":%q,"message":%q,"innerError":{"request-id":"x"}}}`, code, message)}
}

// tokens hands out tok-1, then tok-2 when tok-1 is refused, and so on.
type tokens struct {
	gen   atomic.Int32
	calls atomic.Int32
	err   error
}

func (ts *tokens) source(_ context.Context, rejected string) (string, error) {
	ts.calls.Add(1)
	if ts.err != nil {
		return "", ts.err
	}
	cur := fmt.Sprintf("tok-%d", ts.gen.Load()+1)
	if rejected == cur {
		ts.gen.Add(1)
		cur = fmt.Sprintf("tok-%d", ts.gen.Load()+1)
	}
	return cur, nil
}

func account(f *fakeGraph, ts *tokens) graphsend.Account {
	return graphsend.Account{BaseURL: f.URL, Mailbox: "support@contoso.example", TokenSource: ts.source}
}

func TestSender_Send_postsRawMIME(t *testing.T) {
	t.Parallel()
	f := startGraph(t)
	reply, err := graphsend.NewSender().Send(t.Context(), account(f, &tokens{}), []byte(rawMail))
	if err != nil {
		t.Fatalf("Send() error = %v", err)
	}
	if want := "202 Accepted (request-id req-ok)"; reply != want {
		t.Errorf("Send() reply = %q, want %q", reply, want)
	}
	want := []request{{Method: "POST", Path: "/v1.0/users/support@contoso.example/sendMail", Auth: "Bearer tok-1",
		ContentType: "text/plain", Prefer: `IdType="ImmutableId"`, MIME: rawMail}}
	if d := cmp.Diff(want, f.requests()); d != "" {
		t.Errorf("requests (-want +got):\n%s", d)
	}
}

func TestSender_Send_failures(t *testing.T) {
	t.Parallel()
	htmlPage := answer{status: http.StatusBadGateway, header: map[string]string{"Content-Type": "text/html"},
		body: "<html><head><title>502</title></head><body><h1>Bad Gateway</h1><p>The proxy could not reach graph.</p></body></html>"}
	tests := []struct {
		name   string
		script []answer
		// want is the error's stage, code, Graph code and temporary.
		want         string
		wantRetry    time.Duration // the Retry-After, to within 2 s below
		wantReply    []string
		wantRequests int
		wantAuth     []string
	}{
		{name: "a 400 is permanent with Graph's words verbatim",
			script:       []answer{graphJSON(400, "ErrorInvalidRecipients", "At least one recipient isn't valid., A message can't be sent because it contains no recipients.")},
			want:         "send/400/ErrorInvalidRecipients/false",
			wantReply:    []string{"ErrorInvalidRecipients: At least one recipient isn't valid., A message can't be sent because it contains no recipients.", "request-id req-ErrorInvalidRecipients"},
			wantRequests: 1},
		{name: "a 403 from RBAC for Applications is permanent",
			script:       []answer{graphJSON(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")},
			want:         "send/403/ErrorAccessDenied/false",
			wantReply:    []string{"ErrorAccessDenied: Access is denied. Check credentials and try again."},
			wantRequests: 1},
		{name: "a 429 is temporary and returns its Retry-After",
			script: []answer{graphJSON(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", "Retry-After", "7")},
			want:   "send/429/ApplicationThrottled/true", wantRetry: 7 * time.Second,
			wantReply:    []string{"ApplicationThrottled: Application is over its MailboxConcurrency limit."},
			wantRequests: 1},
		{name: "a 503 is temporary with a Retry-After given as a date",
			script: []answer{graphJSON(503, "ServiceUnavailable", "Service is temporarily unavailable.", "Retry-After",
				time.Now().Add(90*time.Second).UTC().Format(http.TimeFormat))},
			want: "send/503/ServiceUnavailable/true", wantRetry: 90 * time.Second, wantRequests: 1},
		{name: "a 500 is temporary",
			script: []answer{graphJSON(500, "generalException", "An unexpected error occurred.")},
			want:   "send/500/generalException/true", wantRequests: 1},
		{name: "an HTML error page says so",
			script:       []answer{htmlPage},
			want:         "send/502//true",
			wantReply:    []string{"502 Bad Gateway from 127.0.0.1", "not a Graph answer (text/html)", "Bad Gateway The proxy could not reach graph."},
			wantRequests: 1},
		{name: "a 404 page that is not Graph's is permanent",
			script:       []answer{{status: 404, header: map[string]string{"Content-Type": "text/html"}, body: "<h1>Not Found</h1>"}},
			want:         "send/404//false",
			wantReply:    []string{"404 Not Found", "not a Graph answer", "Not Found"},
			wantRequests: 1},
		{name: "a 200 is not Graph's 202 and is not retried",
			script:       []answer{{status: 200, body: "<html>welcome</html>"}},
			want:         "send/200//false",
			wantReply:    []string{"instead of 202 Accepted"},
			wantRequests: 1},
		{name: "a redirect is not followed",
			script:       []answer{{status: 302, header: map[string]string{"Location": "https://login.example/"}}},
			want:         "send/302//false",
			wantReply:    []string{`to "https://login.example/"`, "graph_base_url"},
			wantRequests: 1},
		{name: "a second 401 after a fresh token is permanent",
			script: []answer{graphJSON(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
				graphJSON(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")},
			want:         "send/401/InvalidAuthenticationToken/false",
			wantReply:    []string{"Invalid audience.", "with a fresh token too"},
			wantRequests: 2, wantAuth: []string{"Bearer tok-1", "Bearer tok-2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := startGraph(t, tc.script...)
			_, err := graphsend.NewSender().Send(t.Context(), account(f, &tokens{}), []byte(rawMail))
			var ge *graphsend.Error
			if !errors.As(err, &ge) {
				t.Fatalf("Send() error = %v, want a *graphsend.Error", err)
			}
			if got := fmt.Sprintf("%s/%d/%s/%v", ge.Stage, ge.Code, ge.GraphCode, ge.Temporary); got != tc.want {
				t.Errorf("Send() error = %s, want %s", got, tc.want)
			}
			if ge.RetryAfter > tc.wantRetry || ge.RetryAfter < tc.wantRetry-2*time.Second {
				t.Errorf("RetryAfter = %s, want %s (to within 2 s below)", ge.RetryAfter, tc.wantRetry)
			}
			for _, w := range tc.wantReply {
				if !strings.Contains(ge.Reply, w) {
					t.Errorf("Reply = %q, want it to contain %q", ge.Reply, w)
				}
			}
			reqs := f.requests()
			if len(reqs) != tc.wantRequests {
				t.Errorf("%d requests, want %d", len(reqs), tc.wantRequests)
			}
			if tc.wantAuth != nil {
				var auth []string
				for _, r := range reqs {
					auth = append(auth, r.Auth)
				}
				if d := cmp.Diff(tc.wantAuth, auth); d != "" {
					t.Errorf("Authorization headers (-want +got):\n%s", d)
				}
			}
		})
	}
}

func TestSender_Send_401GetsOneFreshToken(t *testing.T) {
	t.Parallel()
	f := startGraph(t, graphJSON(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."))
	ts := &tokens{}
	reply, err := graphsend.NewSender().Send(t.Context(), account(f, ts), []byte(rawMail))
	if err != nil || !strings.HasPrefix(reply, "202 Accepted") {
		t.Fatalf("Send() = %q, %v; want 202 Accepted after a fresh token", reply, err)
	}
	reqs := f.requests()
	if len(reqs) != 2 || reqs[0].Auth != "Bearer tok-1" || reqs[1].Auth != "Bearer tok-2" || reqs[1].MIME != rawMail {
		t.Errorf("requests = %+v, want tok-1 refused, then the same mail with tok-2", reqs)
	}
}

func TestSender_Send_tokenErrorsAreTemporary(t *testing.T) {
	t.Parallel()
	f := startGraph(t)
	ts := &tokens{err: errors.New(`OAuth connection "Contoso": token endpoint answered 401 Unauthorized: invalid_client: AADSTS7000215`)}
	_, err := graphsend.NewSender().Send(t.Context(), account(f, ts), []byte(rawMail))
	var ge *graphsend.Error
	if !errors.As(err, &ge) || ge.Stage != graphsend.StageAuth || !ge.Temporary || !strings.Contains(ge.Reply, "AADSTS7000215") {
		t.Fatalf("Send() error = %#v, want a temporary auth error with the provider's words", err)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests without a token, want 0", n)
	}
}

func TestSender_Send_keepsTheMailboxBackAfterRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := startGraph(t, graphJSON(429, "ApplicationThrottled", "Too many requests.", "Retry-After", "30"))
	s := graphsend.NewSender()
	s.Now = clock
	a := account(f, &tokens{})
	if _, err := s.Send(t.Context(), a, []byte(rawMail)); err == nil {
		t.Fatal("Send() error = nil, want the 429")
	}
	// within the Retry-After: refused without a request
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	_, err := s.Send(t.Context(), a, []byte(rawMail))
	var ge *graphsend.Error
	if !errors.As(err, &ge) || !ge.Temporary || ge.Code != 429 || ge.RetryAfter != 20*time.Second {
		t.Fatalf("Send() within the Retry-After = %#v, want a temporary 429 with 20s left", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d requests, want 1: none while Graph asked to wait", n)
	}
	// another mailbox is not held back
	b := a
	b.Mailbox = "sales@contoso.example"
	if _, err := s.Send(t.Context(), b, []byte(rawMail)); err != nil {
		t.Errorf("Send() to another mailbox error = %v", err)
	}
	// after it: sent
	mu.Lock()
	now = now.Add(21 * time.Second)
	mu.Unlock()
	if _, err := s.Send(t.Context(), a, []byte(rawMail)); err != nil {
		t.Errorf("Send() after the Retry-After error = %v", err)
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

func TestSender_Send_atMostFourRequestsPerMailbox(t *testing.T) {
	t.Parallel()
	var inFlight, peak atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	s := graphsend.NewSender()
	a := graphsend.Account{BaseURL: srv.URL, Mailbox: "support@contoso.example", TokenSource: (&tokens{}).source}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() {
			_, err := s.Send(context.Background(), a, []byte(rawMail))
			errs <- err
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for inFlight.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a fifth request would arrive now
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Send() error = %v", err)
		}
	}
	if p := peak.Load(); p != 4 {
		t.Errorf("peak concurrent requests = %d, want 4", p)
	}
}

func TestSender_Send_refusesBeforeAnyRequest(t *testing.T) {
	t.Parallel()
	f := startGraph(t)
	ts := (&tokens{}).source
	tests := []struct {
		name  string
		a     graphsend.Account
		stage string
	}{
		{"no mailbox", graphsend.Account{BaseURL: f.URL, TokenSource: ts}, graphsend.StageSettings},
		{"a mailbox with a slash", graphsend.Account{BaseURL: f.URL, Mailbox: "a/b", TokenSource: ts}, graphsend.StageSettings},
		{"no token source", graphsend.Account{BaseURL: f.URL, Mailbox: "support@contoso.example"}, graphsend.StageSettings},
		{"a base URL that is not one", graphsend.Account{BaseURL: "graph.microsoft.com", Mailbox: "x@y.example", TokenSource: ts}, graphsend.StageSettings},
		{"too large", graphsend.Account{BaseURL: f.URL, Mailbox: "support@contoso.example", TokenSource: ts, MaxSize: 10}, graphsend.StageSize},
	}
	for _, tc := range tests {
		_, err := graphsend.NewSender().Send(t.Context(), tc.a, []byte(rawMail))
		var ge *graphsend.Error
		if !errors.As(err, &ge) || ge.Stage != tc.stage || ge.Temporary {
			t.Errorf("%s: Send() error = %v, want a permanent %s error", tc.name, err, tc.stage)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests, want 0", n)
	}
}

func TestSender_Send_networkErrorsAreTemporary(t *testing.T) {
	t.Parallel()
	f := startGraph(t)
	base := f.URL
	f.Close()
	_, err := graphsend.NewSender().Send(t.Context(), graphsend.Account{BaseURL: base, Mailbox: "x@contoso.example",
		TokenSource: (&tokens{}).source}, []byte(rawMail))
	var ge *graphsend.Error
	if !errors.As(err, &ge) || ge.Stage != graphsend.StageSend || !ge.Temporary || ge.Code != 0 {
		t.Fatalf("Send() to a closed port error = %#v, want a temporary send error without a code", err)
	}
}
