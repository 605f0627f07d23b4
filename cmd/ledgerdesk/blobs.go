package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

func runBlobs(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "migrate" {
		fmt.Fprint(stderr, "Usage: ledgerdesk blobs migrate --to file|postgres|s3 [flags]\n")
		return errUsage
	}
	return runBlobsMigrate(ctx, args[1:], getenv, stdout, stderr)
}

func runBlobsMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("blobs migrate", "Copy every stored mail blob from the configured blob store ("+envBlobStore+") to another,\n"+
		"reading each copy back and checking it by its SHA-256. Safe to interrupt and to run again: blobs the target\n"+
		"holds intact are skipped. Run it, switch "+envBlobStore+" to the target and restart, then run it once more\n"+
		"with the old store configured to pick up what arrived in between.", stderr)
	cfg := bindConfig(fs, getenv, false)
	bcfg := bindBlobConfig(fs, getenv)
	to := fs.String("to", "", "the blob store to copy to: "+blobStoreChoices)
	workers := fs.Int("workers", 4, "blobs copied in parallel")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := cfg.validate(false); err != nil {
		return err
	}
	switch {
	case *to == "":
		return &configError{problems: []error{fmt.Errorf("--to: give the blob store to copy to (%s)", blobStoreChoices)}}
	case *to == bcfg.Kind:
		return &configError{problems: []error{fmt.Errorf("--to: %s is the configured store already (%s); "+
			"set %s to the store to copy from", *to, envBlobStore, envBlobStore)}}
	case *workers < 1:
		return &configError{problems: []error{fmt.Errorf("--workers: %d, want at least 1", *workers)}}
	}
	if err := bcfg.validate(cfg, bcfg.Kind, *to); err != nil {
		return err
	}
	logger := newLogger(cfg.LogFormat, stderr)
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	from, err := openBlobStore(ctx, bcfg.Kind, bcfg, cfg, st)
	if err != nil {
		return err
	}
	target, err := openBlobStore(ctx, *to, bcfg, cfg, st)
	if err != nil {
		return err
	}
	show := newMigrateProgress(stdout, bcfg.Kind, *to)
	p, err := blobstore.Migration{From: from, To: target, Packed: recordedPacks(st), Workers: *workers,
		Progress: show.update}.Run(ctx)
	show.finish(p)
	return err
}

// packPage bounds the blob_packs rows read per transaction.
const packPage = 1000

// recordedPacks lists the pack locations recorded in blob_packs, a page
// per short transaction, so a running serve is not held up.
func recordedPacks(st *store) func(ctx context.Context, fn func(blobstore.Packed) error) error {
	return func(ctx context.Context, fn func(blobstore.Packed) error) error {
		after := ""
		for {
			var page []blobstore.Packed
			err := st.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
				page = page[:0]
				rows, err := tx.Query(ctx, `SELECT ref, pack, pack_offset, length FROM blob_packs WHERE ref > $1 ORDER BY ref LIMIT $2`,
					after, packPage)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var p blobstore.Packed
					var ref string
					if err := rows.Scan(&ref, &p.Pack, &p.Offset, &p.Length); err != nil {
						return err
					}
					p.Ref = blobstore.Ref(ref)
					page = append(page, p)
				}
				return rows.Err()
			})
			if err != nil {
				return fmt.Errorf("read blob_packs: %w", err)
			}
			for _, p := range page {
				if err := fn(p); err != nil {
					return err
				}
			}
			if len(page) < packPage {
				return nil
			}
			after = string(page[len(page)-1].Ref)
		}
	}
}

// migrateProgress shows a migration: a bar on a terminal, else a line at
// most every plainEvery (logs and CI keep lines, not redraws).
type migrateProgress struct {
	mu       sync.Mutex
	w        io.Writer
	bar      *progressbar.ProgressBar
	from, to string
	last     time.Time
}

const plainEvery = 2 * time.Second

func newMigrateProgress(w io.Writer, from, to string) *migrateProgress {
	m := &migrateProgress{w: w, from: from, to: to}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		m.bar = progressbar.NewOptions(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("blobs "+from+" → "+to),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("blobs"),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	return m
}

func (m *migrateProgress) update(p blobstore.MigrationProgress) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bar != nil {
		if m.bar.GetMax() != p.Total {
			m.bar.ChangeMax(p.Total)
		}
		_ = m.bar.Set(p.Done)
		return
	}
	now := time.Now()
	if now.Sub(m.last) < plainEvery {
		return
	}
	m.last = now
	fmt.Fprintf(m.w, "blobs migrate: %d/%d blobs (%d%%), %d copied (%s), %d already there, %d failed\n",
		p.Done, p.Total, percent(p.Done, p.Total), p.Copied, mib(p.Bytes), p.Present, p.Failed)
}

func (m *migrateProgress) finish(p blobstore.MigrationProgress) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bar != nil {
		_ = m.bar.Finish()
	}
	fmt.Fprintf(m.w, "blobs migrate: %s → %s: %d blobs, %d copied and verified (%s), %d already there and verified, %d failed\n",
		m.from, m.to, p.Total, p.Copied, mib(p.Bytes), p.Present, p.Failed)
}

func percent(a, b int) int {
	if b == 0 {
		return 100
	}
	return a * 100 / b
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
