package graphtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph/graphtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
)

const box = "support@example.org"

type client struct {
	t         *testing.T
	srv       *graphtest.Server
	token     string
	immutable bool
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("answer %d is no JSON: %v\n%s", a.status, err, a.body)
	}
	return v
}

func (a answer) errorCode(t *testing.T) string {
	t.Helper()
	e, _ := a.json(t)["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (c client) do(method, path string, body any) answer {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(path, "http") {
		u = c.srv.URL + "/v1.0/users/" + url.PathEscape(box) + path
	}
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.immutable {
		req.Header.Set("Prefer", `IdType="ImmutableId"`)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: raw}
}

func mails(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "Subject: mail %d\r\nMessage-ID: <m%d@example.net>\r\n\r\nbody %d\r\n", i, i, i)
	}
	return out
}

func TestServer_listsPagesWithSizeAndStreamsRawMIME(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", mails(25))
	c := client{t: t, srv: srv, token: "t", immutable: true}

	var got []string
	next := "/mailFolders/inbox/messages?$select=id,internetMessageId&$orderby=receivedDateTime%20asc&" +
		"$expand=singleValueExtendedProperties($filter=id%20eq%20'Integer%200x0E08')"
	for pages := 0; next != ""; pages++ {
		a := c.do(http.MethodGet, next, nil)
		if a.status != http.StatusOK || pages > 5 {
			t.Fatalf("list = %d %s", a.status, a.body)
		}
		v := a.json(t)
		for _, m := range v["value"].([]any) {
			m := m.(map[string]any)
			got = append(got, m["id"].(string))
			props := m["singleValueExtendedProperties"].([]any)
			if p := props[0].(map[string]any); p["id"] != "Integer 0xe08" || p["value"] == "" {
				t.Errorf("size property %v", p)
			}
		}
		next, _ = v["@odata.nextLink"].(string)
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("listed %d ids, want the 25 immutable ids oldest first", len(got))
	}

	a := c.do(http.MethodGet, "/messages/"+url.PathEscape(ids[3])+"/$value", nil)
	if a.status != http.StatusOK || string(a.body) != string(mails(25)[3]) {
		t.Errorf("$value = %d %q", a.status, a.body)
	}
	a = c.do(http.MethodGet, "/mailFolders/inbox/messages?$select=size", nil)
	if a.status != http.StatusBadRequest || a.errorCode(t) != "RequestBroker--ParseUri" {
		t.Errorf("unknown $select = %d %s", a.status, a.body)
	}
}

func TestServer_aMoveChangesTheDefaultIDButNotTheImmutableOne(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", mails(1))
	plain := client{t: t, srv: srv, token: "t"}
	v := plain.do(http.MethodGet, "/mailFolders/inbox/messages", nil).json(t)
	restID := v["value"].([]any)[0].(map[string]any)["id"].(string)
	if restID == ids[0] {
		t.Fatal("without the Prefer header the fake answered the immutable id")
	}
	moved := plain.do(http.MethodPost, "/messages/"+url.PathEscape(restID)+"/move", map[string]string{"destinationId": "archive"})
	newID := moved.json(t)["id"].(string)
	if moved.status != http.StatusCreated || newID == restID {
		t.Errorf("move without Prefer = %d, id %s → %s; want 201 and a new id", moved.status, restID, newID)
	}
	if a := plain.do(http.MethodGet, "/messages/"+url.PathEscape(restID), nil); a.status != http.StatusNotFound || a.errorCode(t) != "ErrorItemNotFound" {
		t.Errorf("old default id after the move = %d %s, want 404 ErrorItemNotFound", a.status, a.body)
	}

	immutable := client{t: t, srv: srv, token: "t", immutable: true}
	moved = immutable.do(http.MethodPost, "/messages/"+url.PathEscape(ids[0])+"/move", map[string]string{"destinationId": "inbox"})
	if got := moved.json(t)["id"]; got != ids[0] {
		t.Errorf("move with Prefer answered id %v, want the immutable %s", got, ids[0])
	}
	if len(srv.WithoutImmutableID()) != 3 {
		t.Errorf("%d requests recorded without the header, want 3", len(srv.WithoutImmutableID()))
	}
}

func TestServer_foldersDeleteAndPurge(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", mails(3))
	c := client{t: t, srv: srv, token: "t", immutable: true}

	created := c.do(http.MethodPost, "/mailFolders", map[string]string{"displayName": "HD Error Messages"})
	if created.status != http.StatusCreated {
		t.Fatalf("create = %d %s", created.status, created.body)
	}
	if a := c.do(http.MethodPost, "/mailFolders", map[string]string{"displayName": "hd error messages"}); a.errorCode(t) != "ErrorFolderExists" {
		t.Errorf("second create = %d %s, want ErrorFolderExists", a.status, a.body)
	}
	found := c.do(http.MethodGet, "/mailFolders?$filter=displayName%20eq%20'HD%20Error%20Messages'", nil).json(t)["value"].([]any)
	if len(found) != 1 || found[0].(map[string]any)["id"] != created.json(t)["id"] {
		t.Errorf("filter found %v", found)
	}
	inbox := c.do(http.MethodGet, "/mailFolders/Inbox", nil).json(t)["id"].(string)
	child := c.do(http.MethodPost, "/mailFolders/"+url.PathEscape(inbox)+"/childFolders", map[string]string{"displayName": "O'Brien"})
	if child.status != http.StatusCreated || srv.FolderID(box, "Inbox/O'Brien") != child.json(t)["id"] {
		t.Errorf("child create = %d %s", child.status, child.body)
	}
	kids := c.do(http.MethodGet, "/mailFolders/"+url.PathEscape(inbox)+"/childFolders?$filter=displayName%20eq%20'O''Brien'", nil)
	if n := len(kids.json(t)["value"].([]any)); n != 1 {
		t.Errorf("childFolders filter with a quote found %d", n)
	}

	for _, id := range ids[:2] {
		if a := c.do(http.MethodDelete, "/messages/"+url.PathEscape(id), nil); a.status != http.StatusNoContent {
			t.Errorf("delete = %d %s", a.status, a.body)
		}
	}
	if a := c.do(http.MethodPost, "/messages/"+url.PathEscape(ids[2])+"/permanentDelete", nil); a.status != http.StatusNoContent {
		t.Errorf("permanentDelete = %d", a.status)
	}
	if srv.Count(box, "Inbox") != 0 || srv.Count(box, "deleteditems") != 2 || srv.Purged(box) != 1 {
		t.Errorf("Inbox %d, Deleted Items %d, purged %d", srv.Count(box, "Inbox"), srv.Count(box, "deleteditems"), srv.Purged(box))
	}
	c.do(http.MethodDelete, "/messages/"+url.PathEscape(ids[0]), nil)
	if srv.Count(box, "deleteditems") != 1 || srv.Purged(box) != 2 {
		t.Error("a delete in Deleted Items did not purge")
	}
}

func TestServer_tokens(t *testing.T) {
	t.Parallel()
	idp := oauthtest.Start(t, oauthtest.Options{})
	srv := graphtest.Start(t, graphtest.Options{CheckToken: graphtest.Introspection(idp.URL + "/introspect")})
	srv.AddMailbox(box)
	if a := (client{t: t, srv: srv}).do(http.MethodGet, "/mailFolders/inbox", nil); a.status != http.StatusUnauthorized ||
		a.errorCode(t) != "InvalidAuthenticationToken" || a.header.Get("WWW-Authenticate") == "" {
		t.Errorf("no token = %d %s", a.status, a.body)
	}
	if a := (client{t: t, srv: srv, token: "made-up"}).do(http.MethodGet, "/mailFolders/inbox", nil); a.status != http.StatusUnauthorized {
		t.Errorf("unknown token = %d", a.status)
	}
	live := client{t: t, srv: srv, token: idp.AccessTokenFor("")}
	if a := live.do(http.MethodGet, "/mailFolders/inbox", nil); a.status != http.StatusOK {
		t.Errorf("live token = %d %s", a.status, a.body)
	}
	srv.RejectTokensSeen()
	if a := live.do(http.MethodGet, "/mailFolders/inbox", nil); a.status != http.StatusUnauthorized {
		t.Errorf("rejected token = %d", a.status)
	}
	if a := (client{t: t, srv: srv, token: idp.AccessTokenFor("")}).do(http.MethodGet, "/mailFolders/inbox", nil); a.status != http.StatusOK {
		t.Errorf("fresh token = %d", a.status)
	}
}

func TestServer_faults(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{})
	ids := srv.AddMessages(box, "Inbox", mails(2))
	c := client{t: t, srv: srv, token: "t", immutable: true}

	srv.Throttle(1, http.StatusTooManyRequests, "7")
	if a := c.do(http.MethodGet, "/mailFolders/inbox", nil); a.status != 429 || a.header.Get("Retry-After") != "7" || a.errorCode(t) != "ApplicationThrottled" {
		t.Errorf("throttled = %d %v %s", a.status, a.header, a.body)
	}
	srv.HTMLErrorPage(1, http.StatusBadGateway)
	if a := c.do(http.MethodGet, "/mailFolders/inbox", nil); a.status != 502 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
		t.Errorf("HTML page = %d %v", a.status, a.header)
	}
	srv.VanishOnDownload(box, ids[0])
	if a := c.do(http.MethodGet, "/messages/"+url.PathEscape(ids[0])+"/$value", nil); a.status != 404 || a.errorCode(t) != "ErrorItemNotFound" {
		t.Errorf("vanished = %d %s", a.status, a.body)
	}
	if srv.Count(box, "Inbox") != 1 {
		t.Error("the vanished mail is still there")
	}
	srv.Deny(box)
	if a := c.do(http.MethodGet, "/mailFolders/inbox", nil); a.status != 403 || a.errorCode(t) != "ErrorAccessDenied" {
		t.Errorf("denied = %d %s", a.status, a.body)
	}
	if a := c.do("GET", srv.URL+"/v1.0/users/nobody@example.org/mailFolders/inbox", nil); a.errorCode(t) != "ErrorInvalidUser" {
		t.Errorf("unknown mailbox = %d %s", a.status, a.body)
	}
}

// TestServer_concurrencyLimit: more than 4 requests at once to a mailbox
// are answered 429, and the peak shows them.
func TestServer_concurrencyLimit(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{Latency: 50 * time.Millisecond})
	srv.AddMailbox(box)
	c := client{t: t, srv: srv, token: "t", immutable: true}
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = c.do(http.MethodGet, "/mailFolders/inbox", nil).status
		}()
	}
	wg.Wait()
	throttled := 0
	for _, s := range statuses {
		if s == http.StatusTooManyRequests {
			throttled++
		}
	}
	if throttled == 0 || srv.PeakConcurrency(box) <= 4 || srv.RequestCount() != 8 {
		t.Errorf("8 concurrent requests: %d throttled, peak %d, %d recorded; want some throttled above 4",
			throttled, srv.PeakConcurrency(box), srv.RequestCount())
	}
}

type batchAnswer struct {
	Responses []struct {
		ID      string            `json:"id"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	} `json:"responses"`
}

func (c client) batch(requests []map[string]any) (int, batchAnswer) {
	c.t.Helper()
	a := c.do(http.MethodPost, c.srv.URL+"/v1.0/$batch", map[string]any{"requests": requests})
	var out batchAnswer
	if a.status == http.StatusOK {
		if err := json.Unmarshal(a.body, &out); err != nil {
			c.t.Fatal(err)
		}
	}
	return a.status, out
}

func deleteRequest(id, msg string, dependsOn ...string) map[string]any {
	r := map[string]any{"id": id, "method": "DELETE", "url": "/users/" + box + "/messages/" + url.PathEscape(msg),
		"headers": map[string]string{"Prefer": `IdType="ImmutableId"`}}
	if len(dependsOn) > 0 {
		r["dependsOn"] = dependsOn
	}
	return r
}

// TestServer_batch: a serial JSON batch runs its requests one after the
// other, each recorded with its own headers; after a failure the rest are
// answered 424 without running; a parallel batch above 4 requests draws
// 429s; more than 20 requests are refused.
func TestServer_batch(t *testing.T) {
	t.Parallel()
	srv := graphtest.Start(t, graphtest.Options{Latency: 20 * time.Millisecond})
	ids := srv.AddMessages(box, "Inbox", mails(12))
	c := client{t: t, srv: srv, token: "t", immutable: true}

	status, got := c.batch([]map[string]any{deleteRequest("a", ids[0]), deleteRequest("b", ids[1], "a"), deleteRequest("c", ids[2], "b")})
	if status != http.StatusOK || len(got.Responses) != 3 {
		t.Fatalf("serial batch = %d %+v", status, got)
	}
	for _, r := range got.Responses {
		if r.Status != http.StatusNoContent {
			t.Errorf("request %s = %d, want 204", r.ID, r.Status)
		}
	}
	if srv.Count(box, "deleteditems") != 3 || srv.PeakConcurrency(box) != 1 {
		t.Errorf("Deleted Items %d, peak %d; want 3 and the serial requests one at a time", srv.Count(box, "deleteditems"), srv.PeakConcurrency(box))
	}
	inner := 0
	for _, r := range srv.Requests() {
		if r.Batch != "" {
			inner++
		}
	}
	if inner != 3 || len(srv.WithoutImmutableID()) != 0 {
		t.Errorf("%d batch requests recorded, %d without the header; want 3 and 0", inner, len(srv.WithoutImmutableID()))
	}

	_, got = c.batch([]map[string]any{deleteRequest("a", "no-such-id"), deleteRequest("b", ids[3], "a")})
	statuses := map[string]int{}
	for _, r := range got.Responses {
		statuses[r.ID] = r.Status
	}
	if statuses["a"] != http.StatusNotFound || statuses["b"] != http.StatusFailedDependency || srv.Count(box, "Inbox") != 9 {
		t.Errorf("after a failure: %v with %d in the Inbox, want 404, 424 and nothing more deleted", statuses, srv.Count(box, "Inbox"))
	}

	var parallel []map[string]any
	for i := range 6 {
		parallel = append(parallel, deleteRequest(fmt.Sprint(i), ids[4+i]))
	}
	_, got = c.batch(parallel)
	throttled := 0
	for _, r := range got.Responses {
		if r.Status == http.StatusTooManyRequests && r.Headers["Retry-After"] != "" {
			throttled++
		}
	}
	if throttled != 2 {
		t.Errorf("6 parallel requests: %d throttled, want the 2 beyond 4", throttled)
	}

	var tooMany []map[string]any
	for i := range 21 {
		tooMany = append(tooMany, deleteRequest(fmt.Sprint(i), ids[0]))
	}
	if status, _ := c.batch(tooMany); status != http.StatusBadRequest {
		t.Errorf("21 requests = %d, want 400", status)
	}
}
