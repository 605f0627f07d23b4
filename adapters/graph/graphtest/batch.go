package graphtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
)

// MaxBatch is the most requests one JSON batch may carry.
const MaxBatch = 20

type batchRequest struct {
	ID        string            `json:"id"`
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers"`
	Body      json.RawMessage   `json:"body"`
	DependsOn []string          `json:"dependsOn"`
}

type batchResponse struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// batch serves POST /v1.0/$batch (https://learn.microsoft.com/graph/json-batching):
// up to MaxBatch requests, either all independent, run at once (and so
// counted at once against a mailbox's concurrency), or serial, each
// depending on the one before, run one after the other; a request whose
// dependency failed is answered 424 without being run. Each request
// carries its own headers (Prefer among them); the batch's Authorization
// applies to all. Answers come in reverse order, as Graph may answer in
// any.
func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Requests []batchRequest `json:"requests"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&body); err != nil {
		writeError(w, graphError{http.StatusBadRequest, "BadRequest", "Invalid batch payload format."})
		return
	}
	reqs := body.Requests
	if len(reqs) == 0 || len(reqs) > MaxBatch {
		writeError(w, graphError{http.StatusBadRequest, "BadRequest", fmt.Sprintf("Number of batch requests should be between 1 and %d.", MaxBatch)})
		return
	}
	serial, parallel := true, true
	for i, q := range reqs {
		if q.ID == "" || !strings.HasPrefix(q.URL, "/") {
			writeError(w, graphError{http.StatusBadRequest, "BadRequest", "Every batch request needs an id and a url starting with /."})
			return
		}
		if len(q.DependsOn) > 0 {
			parallel = false
		}
		if i > 0 && !slices.Equal(q.DependsOn, []string{reqs[i-1].ID}) || i == 0 && len(q.DependsOn) > 0 {
			serial = false
		}
	}
	if !serial && !parallel {
		writeError(w, graphError{http.StatusBadRequest, "BadRequest", "Batch requests must be all independent or all depend on the one before."})
		return
	}
	out := make([]batchResponse, len(reqs))
	run := func(i int) {
		q := reqs[i]
		var b io.Reader
		if len(q.Body) > 0 {
			b = bytes.NewReader(q.Body)
		}
		inner, err := http.NewRequestWithContext(r.Context(), q.Method, "/v1.0"+q.URL, b)
		if err != nil {
			body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": "BadRequest", "message": "Invalid request URL."}})
			out[i] = batchResponse{ID: q.ID, Status: http.StatusBadRequest, Body: body}
			return
		}
		if b == nil {
			inner.Body = http.NoBody
		}
		for k, v := range q.Headers {
			inner.Header.Set(k, v)
		}
		inner.Header.Set("Authorization", r.Header.Get("Authorization"))
		rec := httptest.NewRecorder()
		s.handle(rec, inner, q.ID)
		resp := batchResponse{ID: q.ID, Status: rec.Code, Headers: map[string]string{}}
		for _, h := range []string{"Content-Type", "Retry-After"} {
			if v := rec.Header().Get(h); v != "" {
				resp.Headers[h] = v
			}
		}
		if raw := rec.Body.Bytes(); len(raw) > 0 {
			if json.Valid(raw) {
				resp.Body = raw
			} else {
				resp.Body, _ = json.Marshal(string(raw))
			}
		}
		out[i] = resp
	}
	if parallel {
		var wg sync.WaitGroup
		for i := range reqs {
			wg.Go(func() { run(i) })
		}
		wg.Wait()
	} else {
		failed := false
		for i, q := range reqs {
			if failed {
				body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": "FailedDependency",
					"message": "The request was not run because a request it depends on failed."}})
				out[i] = batchResponse{ID: q.ID, Status: http.StatusFailedDependency, Body: body,
					Headers: map[string]string{"Content-Type": "application/json"}}
				continue
			}
			run(i)
			failed = out[i].Status >= 400
		}
	}
	slices.Reverse(out)
	writeJSON(w, http.StatusOK, map[string]any{"responses": out})
}
