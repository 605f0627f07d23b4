package graphsource

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// batchMax is the most requests Graph takes in one JSON batch
// (https://learn.microsoft.com/graph/json-batching).
const batchMax = 20

// batchOutcome is the answer to one request of a batch: its body on
// success, else the error it would have had on its own.
type batchOutcome struct {
	body json.RawMessage
	err  error
}

type batchEnvelope struct {
	Responses []struct {
		ID      string            `json:"id"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	} `json:"responses"`
}

// batch sends up to batchMax requests of the mailbox as one JSON batch and
// returns each one's outcome, in the order of rqs. The requests are
// serial, each depending on the one before, so Graph runs them one after
// the other and the batch takes one of the mailbox's concurrency slots
// (independent requests would run at once and draw 429s beyond 4). A
// request that was not run because one before it failed (424), was
// throttled (429, 503: after Retry-After, bounded) or met a refused token
// (401: once, with a fresh token) is sent again in a new batch; every
// request carries Prefer: IdType="ImmutableId" itself, since a batch's
// headers do not reach its requests. An error is returned only when the
// batch as a whole failed.
func (c *client) batch(ctx context.Context, op string, rqs []request) ([]batchOutcome, error) {
	out := make([]batchOutcome, len(rqs))
	prefix := c.root.String() + "/v1.0"
	pending := make([]int, len(rqs))
	for i := range pending {
		pending[i] = i
	}
	renewed := false
	for attempt := 0; len(pending) > 0; attempt++ {
		type inner struct {
			ID        string            `json:"id"`
			Method    string            `json:"method"`
			URL       string            `json:"url"`
			Headers   map[string]string `json:"headers"`
			Body      json.RawMessage   `json:"body,omitempty"`
			DependsOn []string          `json:"dependsOn,omitempty"`
		}
		reqs := make([]inner, len(pending))
		for k, i := range pending {
			rq := rqs[i]
			in := inner{ID: strconv.Itoa(i), Method: rq.method, URL: strings.TrimPrefix(rq.url, prefix),
				Headers: map[string]string{"Prefer": graph.PreferImmutableID}, Body: rq.body}
			if rq.body != nil {
				in.Headers["Content-Type"] = "application/json"
			}
			if k > 0 {
				in.DependsOn = []string{reqs[k-1].ID}
			}
			reqs[k] = in
		}
		body, err := json.Marshal(map[string]any{"requests": reqs})
		if err != nil {
			return nil, fmt.Errorf("graphsource: %s: %w", op, err)
		}
		var env batchEnvelope
		if err := c.callJSON(ctx, request{op: op, method: http.MethodPost, url: prefix + "/$batch", body: body}, &env); err != nil {
			return nil, err
		}

		answered := make(map[int]bool, len(pending))
		var again []int
		var wait time.Duration
		var lastErr error
		refusedToken := false
		for _, r := range env.Responses {
			i, err := strconv.Atoi(r.ID)
			if err != nil || i < 0 || i >= len(rqs) || answered[i] {
				continue
			}
			answered[i] = true
			failure := func() error { return innerFailure(rqs[i].op, r.Status, r.Headers, r.Body) }
			switch {
			case r.Status >= 200 && r.Status < 300:
				out[i] = batchOutcome{body: r.Body}
				continue
			case r.Status == http.StatusFailedDependency:
			case r.Status == http.StatusUnauthorized && !renewed:
				refusedToken = true
			case r.Status == http.StatusTooManyRequests || r.Status == http.StatusServiceUnavailable:
				d, ok := graph.ParseRetryAfter(r.Headers["Retry-After"], time.Now())
				if !ok {
					d = min(time.Second<<attempt, c.maxRetryAfter)
				}
				wait = max(wait, d)
			default:
				out[i] = batchOutcome{err: failure()}
				continue
			}
			lastErr = failure()
			out[i] = batchOutcome{err: lastErr}
			again = append(again, i)
		}
		for _, i := range pending {
			if !answered[i] {
				out[i] = batchOutcome{err: &mailsource.ServerError{Op: rqs[i].op, Err: fmt.Errorf("%w: the batch answered nothing for request %d", ErrNotGraph, i)}}
			}
		}
		if len(again) == 0 {
			break
		}
		if attempt >= c.maxRetries || wait > c.maxRetryAfter {
			break // the outcomes hold the last answers
		}
		if refusedToken {
			renewed = true
			c.log.Info("graph refused the access token inside a batch; asking for a fresh one", "op", op)
			if _, err := c.tokens.renew(ctx, c.tokens.current()); err != nil {
				return nil, err
			}
		}
		if wait > 0 {
			c.log.Info("graph throttled requests of a batch; waiting as asked", "op", op, "wait", wait,
				"reply", mailsource.ServerReply(lastErr))
			if err := c.sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("graphsource: %s: %w", op, err)
			}
		}
		pending = again
	}
	return out, nil
}

// innerFailure is the error of one request of a batch, as failure makes it
// for a request of its own.
func innerFailure(op string, status int, headers map[string]string, body json.RawMessage) error {
	ct := headers["Content-Type"]
	if e, ok := graph.DecodeError(ct, body); ok {
		ge := &Error{Status: status, Code: e.Code, Message: e.Message}
		return &mailsource.ServerError{Op: op, Reply: ge.reply(), Err: ge}
	}
	if ct == "" {
		ct = "no content type"
	}
	return &mailsource.ServerError{Op: op, Reply: fmt.Sprintf("HTTP %d %s", status, http.StatusText(status)),
		Err: fmt.Errorf("%w: HTTP %d with %s in a batch", ErrNotGraph, status, ct)}
}
