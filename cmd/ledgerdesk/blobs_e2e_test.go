package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/pgstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/s3store"
	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// TestServe_BlobStores runs serve with LEDGERDESK_BLOB_STORE=postgres and
// =s3 against a real Dovecot: a small mail (packed with its batch) and a
// large one (streamed as a loose blob) are imported, their .eml comes back
// through the API byte for byte, the blobs are in the chosen store, and
// nothing was written under the data directory.
func TestServe_BlobStores(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Dovecot, PostgreSQL and the S3 server")
	}
	t.Parallel()
	for _, kind := range []string{blobStorePG, blobStoreS3} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dv := dovecottest.Start(t)
			dv.AddUser(t, "support", "pw1")
			dbURL := pgtest.NewDatabase(t)
			dataDir := t.TempDir()
			env := map[string]string{envDataDir: dataDir, envDatabaseURL: dbURL, envSecretKey: strings.Repeat("ef", 32),
				envAdminToken: e2eToken, envBlobStore: kind}
			var s3cfg s3store.Config
			if kind == blobStoreS3 {
				var vars map[string]string
				vars, s3cfg = s3Env(t)
				for k, v := range vars {
					env[k] = v
				}
			}
			srv := startServe(t, env)
			api := apiClient{tb: t, base: srv.URL}
			if !strings.Contains(srv.Log.String(), `"blob_store":"`+kind+`"`) {
				t.Errorf("serve did not log blob_store %s:\n%s", kind, srv.Log.String())
			}
			host, portStr, _ := net.SplitHostPort(dv.IMAPAddr)
			port, _ := strconv.Atoi(portStr)
			api.must(http.MethodPost, "/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "imap",
				"host": host, "port": port, "security": "none", "allow_plaintext_auth": true, "username": "support",
				"password": "pw1", "poll_interval_seconds": 1, "after_import": "delete", "enabled": true,
				"account_address": "support@desk.example", "create_unknown_users": true})

			small := e2eMail("erika@customer.example", "support@desk.example", "Small mail", "small@customer.example")
			large := e2eMail("max@other.example", "support@desk.example", "Large mail", "large@other.example")
			large = append(large, []byte(strings.Repeat("a long line of a large mail body, over the packing size\r\n", 4000))...)
			dv.DeliverMany(t, "support", [][]byte{small, large})
			received := api.waitEvents(domain.MailReceivedName, 2)
			api.waitEvents(domain.TicketCreatedName, 2) // the articles the .eml is asked of

			pool, err := pgxpool.New(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			var store interface {
				ingest.Blobs
				Exists(blobstore.Ref) (bool, error)
			}
			if kind == blobStorePG {
				store, err = pgstore.New(ctx, pool)
			} else {
				store, err = s3store.New(ctx, s3cfg)
			}
			if err != nil {
				t.Fatal(err)
			}
			es := openStoreForTest(t, dbURL)
			for _, e := range received {
				m := payload[domain.MailReceived](t, e)
				ref := blobstore.Ref(m.BlobRef)
				// Read through the store under test, with the recorded pack
				// locations: the bytes are where serve was told to put them.
				rc, err := ingest.OpenBlob(ctx, es, store, ref)
				if err != nil {
					t.Fatalf("mail %q: blob %s not in the %s store: %v", m.Subject, ref, kind, err)
				}
				var raw bytes.Buffer
				_, err = raw.ReadFrom(rc)
				_ = rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Contains(raw.Bytes(), []byte("Subject: "+m.Subject)) {
					t.Errorf("blob of %q does not hold its mail", m.Subject)
				}
				if m.Subject == "Large mail" {
					if ok, err := store.Exists(ref); !ok || err != nil {
						t.Errorf("the large mail is not a loose blob in the %s store: %v, %v", kind, ok, err)
					}
				}
				// The .eml the API serves is the stored mail.
				var ticketID string
				var seq int64
				if err := pool.QueryRow(ctx, `SELECT ticket_id, seq FROM ticket_articles WHERE mail_id = $1`, m.MailID).
					Scan(&ticketID, &seq); err != nil {
					t.Fatalf("article of %q: %v", m.Subject, err)
				}
				// The tickets view may lag behind the log by a moment.
				path := fmt.Sprintf("/api/v1/tickets/%s/articles/%d/eml", ticketID, seq)
				code, eml := api.do(http.MethodGet, path, nil)
				for deadline := time.Now().Add(30 * time.Second); code == http.StatusNotFound && time.Now().Before(deadline); {
					time.Sleep(100 * time.Millisecond)
					code, eml = api.do(http.MethodGet, path, nil)
				}
				if code != http.StatusOK {
					t.Fatalf("GET %s = %d %s", path, code, eml)
				}
				if blobstore.RefFromDigest(sha256.Sum256(eml)) != ref {
					t.Errorf(".eml of %q (%d bytes) is not the stored blob %s", m.Subject, len(eml), ref)
				}
			}
			if files := filesUnder(t, filepath.Join(dataDir, "blobs")); len(files) != 0 {
				t.Errorf("serve wrote blobs under the data directory with %s=%s: %v", envBlobStore, kind, files)
			}
			if kind == blobStoreS3 && strings.Contains(srv.Log.String(), s3cfg.SecretKey) {
				t.Error("the S3 secret key is in serve's log")
			}
		})
	}
}

func filesUnder(tb testing.TB, dir string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}
