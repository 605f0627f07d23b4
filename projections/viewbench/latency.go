package viewbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

const benchAdminToken = "viewbench-bootstrap-admin-token"

// serve runs h on 127.0.0.1:0 until the returned stop is called.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// compareLatency serves the API and a bare Echo handler with a body of the
// same size, and loads both at cfg.Rate, alternating in chunks.
func compareLatency(ctx context.Context, w io.Writer, cfg Config, t *target) error {
	apiURL, stopAPI, err := serve(api.New(api.Options{Store: t.store, AdminToken: benchAdminToken,
		Projections: api.Projections{Tickets: projections.NewTickets(t.store, t.reader, nil)}}))
	if err != nil {
		return err
	}
	defer stopAPI()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}}

	// an analyst's token, as a reporting client would use
	tokBody := strings.NewReader(`{"name":"viewbench","role":"analyst"}`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/api/v1/tokens", tokBody)
	req.Header.Set("Authorization", "Bearer "+benchAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("viewbench: issue a token: %w", err)
	}
	var tok struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&tok)
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("viewbench: issue a token: %w", err)
	}
	if tok.Token == "" {
		return fmt.Errorf("viewbench: issue a token: status %d and no token", resp.StatusCode)
	}

	ticketsURL := apiURL + "/api/v1/tickets?limit=50"
	sample, err := fetch(ctx, client, ticketsURL, tok.Token)
	if err != nil {
		return fmt.Errorf("viewbench: GET /tickets: %w", err)
	}
	var page struct {
		Items      []json.RawMessage `json:"items"`
		NextCursor string            `json:"next_cursor"`
	}
	if err := json.Unmarshal(sample, &page); err != nil {
		return fmt.Errorf("viewbench: GET /tickets: %w", err)
	}
	if len(page.Items) != 50 || page.NextCursor == "" {
		return fmt.Errorf("viewbench: GET /tickets gave %d items, want 50 and a cursor", len(page.Items))
	}
	bare := echo.New()
	bare.HideBanner, bare.HidePort = true, true
	// The bare handler sends the body as the API does: one write with a
	// Content-Length (plain c.Blob would stream it chunked, which is slower
	// and would flatter the API).
	bare.GET("/bare", func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderContentLength, strconv.Itoa(len(sample)))
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, sample)
	})
	bareURL, stopBare, err := serve(bare)
	if err != nil {
		return err
	}
	defer stopBare()

	sides := []struct {
		name, url, token string
		lat              []time.Duration
		errs             int
	}{
		{name: "bare Echo handler, same body", url: bareURL + "/bare"},
		{name: "GET /api/v1/tickets?limit=50", url: ticketsURL, token: tok.Token},
	}
	// warm up both, then alternate chunks of a few seconds
	for i := range sides {
		if _, _, err := load(ctx, client, sides[i].url, sides[i].token, cfg.Rate, min(2*time.Second, cfg.Duration)); err != nil {
			return err
		}
	}
	chunk := min(5*time.Second, cfg.Duration)
	for done := time.Duration(0); done < cfg.Duration; done += chunk {
		for i := range sides {
			lat, errs, err := load(ctx, client, sides[i].url, sides[i].token, cfg.Rate, chunk)
			if err != nil {
				return err
			}
			sides[i].lat = append(sides[i].lat, lat...)
			sides[i].errs += errs
		}
	}
	fmt.Fprintf(w, "latency at %d req/s, %s per side, body %d bytes (open loop, from when each request was due):\n",
		cfg.Rate, cfg.Duration, len(sample))
	fmt.Fprintf(w, "  %-30s %8s %8s %8s %8s %9s %7s\n", "", "requests", "p50", "p90", "p99", "max", "errors")
	var p99 [2]time.Duration
	for i, s := range sides {
		slices.Sort(s.lat)
		p99[i] = pct(s.lat, 0.99)
		fmt.Fprintf(w, "  %-30s %8d %8s %8s %8s %9s %7d\n", s.name, len(s.lat), ms(pct(s.lat, 0.5)), ms(pct(s.lat, 0.9)),
			ms(p99[i]), ms(pct(s.lat, 1)), s.errs)
	}
	if p99[0] > 0 {
		fmt.Fprintf(w, "  p99 tickets / bare: %.2fx (target <= 2x)\n", float64(p99[1])/float64(p99[0]))
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func fetch(ctx context.Context, client *http.Client, url, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return b, nil
}

// load sends GETs at a fixed rate for d, each on its own goroutine (open
// loop), and returns each request's latency counted from when it was due.
func load(ctx context.Context, client *http.Client, url, token string, rate int, d time.Duration) ([]time.Duration, int, error) {
	interval := time.Second / time.Duration(rate)
	n := int(d / interval)
	lat := make([]time.Duration, 0, n)
	var (
		mu   sync.Mutex
		errs int
		wg   sync.WaitGroup
	)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return nil, 0, ctx.Err()
			case <-time.After(wait):
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := fetch(ctx, client, url, token)
			took := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				return
			}
			lat = append(lat, took)
		}()
	}
	wg.Wait()
	if errs == n {
		return nil, errs, errors.New("viewbench: every request failed")
	}
	return lat, errs, nil
}
