package graphtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// graphError is an error answer: {"error":{"code","message"}}.
type graphError struct {
	status        int
	code, message string
}

var (
	errItemNotFound = graphError{http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store."}
	errNoRoute      = graphError{http.StatusBadRequest, "BadRequest", "Resource not found for the segment."}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e graphError) {
	writeJSON(w, e.status, map[string]any{"error": map[string]any{
		"code": e.code, "message": e.message,
		"innerError": map[string]string{"date": "2026-11-23T08:00:00", "request-id": "9f2c6c1e-0000-4000-8000-000000000000"},
	}})
}

// statusWriter remembers the status written, for the request record, and
// holds the answer until flush: the request leaves the mailbox's in-flight
// count before the client can have the answer's last byte, so a client that
// waits for a whole answer before its next request never shows above its
// own limit (an answer written straight through could reach the client
// before the handler had counted the request out).
// An answer larger than heldAnswerBytes (a large mail's download) is sent
// as it is written, so that the fake does not hold large mails in memory
// that the tests measuring a client's allocations would count.
type statusWriter struct {
	http.ResponseWriter
	status  int
	body    []byte
	through bool // the answer outgrew heldAnswerBytes and is being sent
}

const heldAnswerBytes = 1 << 20

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if !w.through && len(w.body)+len(p) > heldAnswerBytes {
		w.flush()
		w.through = true
	}
	if w.through {
		return w.ResponseWriter.Write(p)
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// flush sends the held answer.
func (w *statusWriter) flush() {
	if w.status == 0 || w.through {
		return
	}
	w.ResponseWriter.WriteHeader(w.status)
	if len(w.body) > 0 {
		_, _ = w.ResponseWriter.Write(w.body)
	}
	w.body = nil
}

// immutablePreferred says whether a Prefer header asks for immutable ids.
func immutablePreferred(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(name), "IdType") &&
				strings.EqualFold(strings.Trim(strings.TrimSpace(val), `"`), "ImmutableId") {
				return true
			}
		}
	}
	return false
}

func bearer(h http.Header) string {
	scheme, tok, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// splitPath returns the unescaped segments of an escaped path, so that an
// id holding an escaped "/" stays one segment.
func splitPath(escaped string) ([]string, bool) {
	parts := strings.Split(strings.Trim(escaped, "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}

func (s *Server) serve(rw http.ResponseWriter, r *http.Request) { s.handle(rw, r, "") }

// handle serves one request: a request over HTTP, or (batch set to the
// batch's id) one request of a JSON batch, which is recorded, counted and
// scripted like any other.
func (s *Server) handle(rw http.ResponseWriter, r *http.Request, batch string) {
	w := &statusWriter{ResponseWriter: rw}
	segs, ok := splitPath(r.URL.EscapedPath())
	req := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Prefer: strings.Join(r.Header.Values("Prefer"), ", "),
		ImmutableID: immutablePreferred(r.Header), Token: bearer(r.Header), Batch: batch}

	s.mu.Lock()
	var mb *mailbox
	if ok && len(segs) >= 3 && segs[0] == "v1.0" && segs[1] == "users" {
		mb = s.mailboxes[strings.ToLower(segs[2])]
	}
	over := false // more requests in flight for the mailbox than it serves
	if mb != nil {
		req.Mailbox = strings.ToLower(mb.address)
		s.inflight[req.Mailbox]++
		n := s.inflight[req.Mailbox]
		s.peak[req.Mailbox] = max(s.peak[req.Mailbox], n)
		over = s.opts.ConcurrencyLimit > 0 && n > s.opts.ConcurrencyLimit
	}
	idx := len(s.requests)
	s.requests = append(s.requests, req)
	hook := s.onRequest
	s.mu.Unlock()
	// The count goes down before the answer is sent (statusWriter).
	defer func() {
		s.mu.Lock()
		if mb != nil {
			s.inflight[req.Mailbox]--
		}
		s.requests[idx].Status = w.status
		s.mu.Unlock()
		w.flush()
	}()

	if hook != nil {
		hook(req)
	}
	if s.opts.Latency > 0 {
		time.Sleep(s.opts.Latency)
	}
	if f, ok := s.takeFault(req); ok {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		if f.Body != "" {
			w.Header().Set("Content-Type", f.ContentType)
			w.WriteHeader(f.Status)
			_, _ = io.WriteString(w, f.Body)
			return
		}
		writeError(w, graphError{f.Status, f.Code, f.Message})
		return
	}
	if e, refused := s.authorize(req.Token); refused {
		w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`)
		writeError(w, e)
		return
	}
	if ok && batch == "" && len(segs) == 2 && segs[0] == "v1.0" && segs[1] == "$batch" && r.Method == http.MethodPost {
		s.batch(w, r)
		return
	}
	if !ok || len(segs) < 3 || segs[0] != "v1.0" || segs[1] != "users" {
		writeError(w, errNoRoute)
		return
	}
	if mb == nil {
		writeError(w, graphError{http.StatusNotFound, "ErrorInvalidUser", fmt.Sprintf("The requested user '%s' is invalid.", segs[2])})
		return
	}
	s.mu.Lock()
	denied, isDenied := s.denied[req.Mailbox]
	s.mu.Unlock()
	if over {
		w.Header().Set("Retry-After", "1")
		writeError(w, graphError{http.StatusTooManyRequests, "ApplicationThrottled", "Application is over its MailboxConcurrency limit."})
		return
	}
	if isDenied {
		writeError(w, denied)
		return
	}
	s.route(w, r, mb, segs[3:], req.ImmutableID)
}

// takeFault returns the first scripted fault that matches req, using it up.
func (s *Server) takeFault(req Request) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.left > 0 && (f.match == nil || f.match(req)) {
			f.left--
			if f.left == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
			return f.fault, true
		}
	}
	return Fault{}, false
}

// authorize checks the Bearer token; refused reports a 401 to answer.
func (s *Server) authorize(tok string) (graphError, bool) {
	if tok == "" {
		return graphError{http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty."}, true
	}
	s.mu.Lock()
	rejected := s.rejected[tok]
	s.seen[tok] = true
	s.mu.Unlock()
	if rejected || (s.opts.CheckToken != nil && !s.opts.CheckToken(tok)) {
		return graphError{http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."}, true
	}
	return graphError{}, false
}

// route serves the path below /v1.0/users/{u}.
func (s *Server) route(w http.ResponseWriter, r *http.Request, mb *mailbox, rest []string, immutable bool) {
	m := r.Method
	switch {
	case len(rest) == 0 && m == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"id": mb.userID, "mail": mb.address, "userPrincipalName": mb.address})
	case len(rest) == 1 && rest[0] == "mailFolders" && m == http.MethodGet:
		s.listFolders(w, r, mb, nil)
	case len(rest) == 1 && rest[0] == "mailFolders" && m == http.MethodPost:
		s.createFolder(w, r, mb, nil)
	case len(rest) >= 2 && rest[0] == "mailFolders":
		s.mu.Lock()
		f := mb.folderByRef(rest[1])
		s.mu.Unlock()
		if f == nil {
			writeError(w, errItemNotFound)
			return
		}
		switch sub := rest[2:]; {
		case len(sub) == 0 && m == http.MethodGet:
			s.mu.Lock()
			v := mb.folderJSON(f)
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, v)
		case len(sub) == 1 && sub[0] == "childFolders" && m == http.MethodGet:
			s.listFolders(w, r, mb, f)
		case len(sub) == 1 && sub[0] == "childFolders" && m == http.MethodPost:
			s.createFolder(w, r, mb, f)
		case len(sub) == 1 && sub[0] == "messages" && m == http.MethodGet:
			s.listMessages(w, r, mb, f, immutable)
		case len(sub) >= 2 && sub[0] == "messages":
			s.message(w, r, mb, f, sub[1], sub[2:], immutable)
		default:
			writeError(w, errNoRoute)
		}
	case len(rest) >= 2 && rest[0] == "messages":
		s.message(w, r, mb, nil, rest[1], rest[2:], immutable)
	case len(rest) == 1 && rest[0] == "sendMail" && m == http.MethodPost:
		s.sendMail(w, r, mb)
	default:
		writeError(w, errNoRoute)
	}
}

// folderByRef finds a folder by id or well-known name (s.mu held).
func (mb *mailbox) folderByRef(ref string) *folder {
	if f := mb.folders[ref]; f != nil {
		return f
	}
	return mb.wellKnown(ref)
}

func (mb *mailbox) folderJSON(f *folder) map[string]any {
	children, total := 0, 0
	for _, c := range mb.folders {
		if c.parent == f {
			children++
		}
	}
	for _, m := range mb.msgs {
		if m.folder == f {
			total++
		}
	}
	parent := ""
	if f.parent != nil {
		parent = f.parent.id
	}
	return map[string]any{"id": f.id, "displayName": f.display, "parentFolderId": parent, "childFolderCount": children,
		"unreadItemCount": total, "totalItemCount": total, "isHidden": false}
}

var displayNameFilter = regexp.MustCompile(`^\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*$`)

// listFolders lists the children of parent (nil: the top-level folders,
// those under msgfolderroot), optionally filtered by displayName, paged.
func (s *Server) listFolders(w http.ResponseWriter, r *http.Request, mb *mailbox, parent *folder) {
	q := r.URL.Query()
	name, filtered := "", false
	if f := q.Get("$filter"); f != "" {
		sm := displayNameFilter.FindStringSubmatch(f)
		if sm == nil {
			writeError(w, graphError{http.StatusBadRequest, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes."})
			return
		}
		name, filtered = strings.ReplaceAll(sm[1], "''", "'"), true
	}
	top, skip, e := paging(q)
	if e != nil {
		writeError(w, *e)
		return
	}
	s.mu.Lock()
	if parent == nil {
		parent = mb.root
	}
	var all []*folder
	for _, f := range mb.sortedFolders() {
		if f.parent == parent && (!filtered || strings.EqualFold(f.display, name)) {
			all = append(all, f)
		}
	}
	page := pageOf(all, top, skip, mb.folderJSON)
	s.mu.Unlock()
	s.writePage(w, r, page, len(all), top, skip)
}

func (s *Server) createFolder(w http.ResponseWriter, r *http.Request, mb *mailbox, parent *folder) {
	var body struct {
		DisplayName string `json:"displayName"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || strings.TrimSpace(body.DisplayName) == "" {
		writeError(w, graphError{http.StatusBadRequest, "ErrorInvalidParameter", "The value of the parameter 'DisplayName' is empty."})
		return
	}
	s.mu.Lock()
	if parent == nil {
		parent = mb.root
	}
	if mb.child(parent, body.DisplayName) != nil {
		s.mu.Unlock()
		writeError(w, graphError{http.StatusConflict, "ErrorFolderExists", "A folder with the specified name already exists."})
		return
	}
	f := &folder{id: newID("AAMkADAwATM0MDAAMS1"), display: body.DisplayName, parent: parent}
	mb.folders[f.id] = f
	v := mb.folderJSON(f)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, v)
}

// paging reads $top and $skip: Graph's default page size when $top is
// missing, MaxPageSize at most.
func paging(q url.Values) (top, skip int, _ *graphError) {
	top = DefaultPageSize
	if v := q.Get("$top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, 0, &graphError{http.StatusBadRequest, "BadRequest", fmt.Sprintf("Invalid value '%s' for $top query option found.", v)}
		}
		top = min(n, MaxPageSize)
	}
	if v := q.Get("$skip"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, &graphError{http.StatusBadRequest, "BadRequest", fmt.Sprintf("Invalid value '%s' for $skip query option found.", v)}
		}
		skip = n
	}
	return top, skip, nil
}

// pageOf renders the items of one page.
func pageOf[T any](all []T, top, skip int, render func(T) map[string]any) []map[string]any {
	page := []map[string]any{}
	for i := skip; i < len(all) && i < skip+top; i++ {
		page = append(page, render(all[i]))
	}
	return page
}

// writePage answers one page of total items and, when more follow, an
// @odata.nextLink that repeats the request's query with the next $skip,
// as Graph does for messages.
func (s *Server) writePage(w http.ResponseWriter, r *http.Request, page []map[string]any, total, top, skip int) {
	out := map[string]any{"@odata.context": s.URL + "/v1.0/$metadata#users('x')/mailFolders", "value": page}
	if skip+top < total {
		q := r.URL.Query()
		q.Set("$top", strconv.Itoa(top))
		q.Set("$skip", strconv.Itoa(skip+top))
		out["@odata.nextLink"] = s.URL + r.URL.EscapedPath() + "?" + q.Encode()
	}
	writeJSON(w, http.StatusOK, out)
}

// messageFields are the message properties $select may name here.
var messageFields = []string{"id", "subject", "internetMessageId", "receivedDateTime", "parentFolderId", "isRead", "hasAttachments"}

var sizeExpand = regexp.MustCompile(`(?i)^\s*singleValueExtendedProperties\(\s*\$filter\s*=\s*id\s+eq\s+'(Integer|Long)\s+0x0*e08'\s*\)\s*$`)

// listMessages lists a folder's messages, paged by $top and $skip.
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, mb *mailbox, f *folder, immutable bool) {
	q := r.URL.Query()
	fields := messageFields
	if sel := q.Get("$select"); sel != "" {
		fields = nil
		for _, p := range strings.Split(sel, ",") {
			p = strings.TrimSpace(p)
			if !slices.Contains(messageFields, p) {
				writeError(w, graphError{http.StatusBadRequest, "RequestBroker--ParseUri",
					fmt.Sprintf("Could not find a property named '%s' on type 'microsoft.graph.message'.", p)})
				return
			}
			fields = append(fields, p)
		}
	}
	withSize := false
	if exp := q.Get("$expand"); exp != "" {
		if !sizeExpand.MatchString(exp) {
			writeError(w, graphError{http.StatusBadRequest, "BadRequest", "Parsing OData Select and Expand failed: the fake expands only the message size property."})
			return
		}
		withSize = true
	}
	desc := true // Graph lists the newest first unless told otherwise
	switch ob := strings.Join(strings.Fields(q.Get("$orderby")), " "); ob {
	case "", "receivedDateTime desc":
	case "receivedDateTime", "receivedDateTime asc":
		desc = false
	default:
		writeError(w, graphError{http.StatusBadRequest, "BadRequest", fmt.Sprintf("The fake cannot order by '%s'.", ob)})
		return
	}
	top, skip, e := paging(q)
	if e != nil {
		writeError(w, *e)
		return
	}
	s.mu.Lock()
	msgs := mb.inFolder(f)
	if desc {
		slices.Reverse(msgs)
	}
	page := pageOf(msgs, top, skip, func(m *message) map[string]any { return messageJSON(m, fields, withSize, immutable) })
	s.mu.Unlock()
	s.writePage(w, r, page, len(msgs), top, skip)
}

func messageJSON(m *message, fields []string, withSize, immutable bool) map[string]any {
	id := m.restID
	if immutable {
		id = m.immutableID
	}
	v := map[string]any{"@odata.etag": `W/"CQAAABYAAAB` + strconv.Itoa(m.seq) + `"`, "id": id}
	for _, f := range fields {
		switch f {
		case "subject":
			v[f] = m.subject
		case "internetMessageId":
			v[f] = m.messageID
		case "receivedDateTime":
			v[f] = m.received.Format(time.RFC3339)
		case "parentFolderId":
			v[f] = m.folder.id
		case "isRead", "hasAttachments":
			v[f] = false
		}
	}
	if withSize {
		// Graph answers the property id in its own spelling, not the one
		// asked for.
		v["singleValueExtendedProperties"] = []map[string]string{{"id": "Integer 0xe08", "value": strconv.Itoa(len(m.raw))}}
	}
	return v
}

// message serves /messages/{id}[/$value|/move|/permanentDelete], inside
// folder f when the path named one.
func (s *Server) message(w http.ResponseWriter, r *http.Request, mb *mailbox, f *folder, id string, rest []string, immutable bool) {
	s.mu.Lock()
	msg := mb.lookup(id)
	if msg != nil && f != nil && msg.folder != f {
		msg = nil
	}
	s.mu.Unlock()
	if msg == nil {
		writeError(w, errItemNotFound)
		return
	}
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
		s.mu.Lock()
		v := messageJSON(msg, messageFields, false, immutable)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, v)
	case len(rest) == 0 && r.Method == http.MethodDelete:
		s.mu.Lock()
		if msg.folder.wellKnown == "deleteditems" {
			mb.remove(msg)
		} else {
			mb.move(msg, mb.wellKnown("deleteditems"))
		}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case len(rest) == 1 && rest[0] == "$value" && r.Method == http.MethodGet:
		s.mu.Lock()
		key := strings.ToLower(mb.address) + "\x00" + msg.immutableID
		gone := s.vanish[key]
		if gone {
			delete(s.vanish, key)
			mb.remove(msg)
		}
		raw := msg.raw
		s.mu.Unlock()
		if gone {
			writeError(w, errItemNotFound)
			return
		}
		// No Content-Length: long answers are chunked, as Graph's are.
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, bytes.NewReader(raw))
	case len(rest) == 1 && rest[0] == "move" && r.Method == http.MethodPost:
		var body struct {
			DestinationID string `json:"destinationId"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || body.DestinationID == "" {
			writeError(w, graphError{http.StatusBadRequest, "ErrorInvalidParameter", "The value of the parameter 'DestinationId' is empty."})
			return
		}
		s.mu.Lock()
		dest := mb.folderByRef(body.DestinationID)
		if dest == nil {
			s.mu.Unlock()
			writeError(w, graphError{http.StatusBadRequest, "ErrorInvalidIdMalformed", "Id is malformed."})
			return
		}
		mb.move(msg, dest)
		v := messageJSON(msg, messageFields, false, immutable)
		s.mu.Unlock()
		writeJSON(w, http.StatusCreated, v)
	case len(rest) == 1 && rest[0] == "permanentDelete" && r.Method == http.MethodPost:
		s.mu.Lock()
		mb.remove(msg)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		writeError(w, errNoRoute)
	}
}

// sendMail takes a raw MIME message as Graph does (Content-Type text/plain,
// the message base64-encoded), answers 202 and keeps a copy in Sent Items,
// which Graph does for every raw MIME send.
func (s *Server) sendMail(w http.ResponseWriter, r *http.Request, mb *mailbox) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		writeError(w, graphError{http.StatusBadRequest, "ErrorMimeContentInvalid", "The MIME content must be sent as base64 text/plain, not " + ct + "."})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 150<<20))
	if err != nil {
		writeError(w, graphError{http.StatusBadRequest, "ErrorMimeContentInvalid", err.Error()})
		return
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(body)))
	if err != nil {
		writeError(w, graphError{http.StatusBadRequest, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."})
		return
	}
	s.mu.Lock()
	s.sent[mb.address] = append(s.sent[mb.address], raw)
	s.mu.Unlock()
	s.AddMessages(mb.address, "SentItems", [][]byte{raw})
	w.Header().Set("request-id", newID("req"))
	w.WriteHeader(http.StatusAccepted)
}
