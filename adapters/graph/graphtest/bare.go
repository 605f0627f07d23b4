package graphtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
)

// BareDownload is the least a client must do to read a mailbox's Inbox,
// the baseline of the import benchmarks: list the ids a thousand at a
// time, then GET every /$value with 4 requests at once, discarding the
// bytes. It returns how many it read.
func (s *Server) BareDownload(tb testing.TB, mailbox, token string) int {
	base := s.URL
	tb.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	get := func(u string) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Prefer", `IdType="ImmutableId"`)
		return client.Do(req)
	}
	users := base + "/v1.0/users/" + url.PathEscape(mailbox)
	var ids []string
	for next := users + "/mailFolders/inbox/messages?$select=id&$top=1000"; next != ""; {
		resp, err := get(next)
		if err != nil {
			tb.Fatal(err)
		}
		var page struct {
			Value []struct {
				ID string `json:"id"`
			} `json:"value"`
			Next string `json:"@odata.nextLink"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			tb.Fatal(err)
		}
		for _, v := range page.Value {
			ids = append(ids, v.ID)
		}
		next = page.Next
	}
	queue := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var n int
	var firstErr error
	for range 4 {
		wg.Go(func() {
			for id := range queue {
				resp, err := get(users + "/messages/" + url.PathEscape(id) + "/$value")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mu.Lock()
				if err == nil {
					n++
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		queue <- id
	}
	close(queue)
	wg.Wait()
	if firstErr != nil {
		tb.Fatal(firstErr)
	}
	return n
}
