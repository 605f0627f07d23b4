package graphsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// ErrNoFolder means a folder path names a folder the mailbox does not have.
var ErrNoFolder = errors.New("graphsource: no such folder")

// wellKnownNames are the folder names Graph resolves in any mailbox and
// locale (https://learn.microsoft.com/graph/api/resources/mailfolder).
var wellKnownNames = map[string]bool{
	"archive": true, "clutter": true, "conflicts": true, "conversationhistory": true, "deleteditems": true,
	"drafts": true, "inbox": true, "junkemail": true, "localfailures": true, "msgfolderroot": true, "outbox": true,
	"recoverableitemsdeletions": true, "scheduled": true, "searchfolders": true, "sentitems": true,
	"serverfailures": true, "syncissues": true,
}

type folderJSON struct {
	ID          string `json:"id"`
	DisplayName string `json:"displayName"`
}

// odataString quotes s as an OData string literal: a quote is doubled.
func odataString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// folderID returns the id of the folder at path: its first segment a
// well-known name or a folder at the top of the mailbox, each further one
// a child folder by display name. With create, missing folders are
// created. Ids are remembered for the session (a folder's id does not
// change when it moves).
func (s *session) folderID(ctx context.Context, path string, create bool) (string, error) {
	key := strings.ToLower(strings.Join(folderSegments(path), "/"))
	if id, ok := s.folderIDs[key]; ok {
		return id, nil
	}
	if err := s.uncreatable[key]; err != nil && create {
		return "", err
	}
	segs := folderSegments(path)
	if len(segs) == 0 {
		return "", fmt.Errorf("%w: %q names no folder", ErrNoFolder, path)
	}
	parent := "" // the top of the mailbox
	for i, seg := range segs {
		var id string
		if i == 0 && wellKnownNames[strings.ToLower(seg)] {
			var f folderJSON
			err := s.c.getJSON(ctx, "open folder "+seg, s.c.path(query("$select", "id,displayName"), "mailFolders", strings.ToLower(seg)), &f)
			if err != nil {
				return "", err
			}
			id = f.ID
		} else {
			var err error
			if id, err = s.childFolder(ctx, parent, seg, create); err != nil {
				if create && isRefusal(err) {
					s.uncreatable[key] = err // asked once per poll, not once per batch
				}
				return "", err
			}
		}
		if id == "" {
			return "", &mailsource.ServerError{Op: "open folder " + seg, Err: fmt.Errorf("%w: a folder without an id", ErrNotGraph)}
		}
		parent = id
	}
	s.folderIDs[key] = parent
	return parent, nil
}

// childFolder finds (or with create makes) the folder display below
// parent ("" for the top of the mailbox).
func (s *session) childFolder(ctx context.Context, parent, display string, create bool) (string, error) {
	segs := []string{"mailFolders"}
	if parent != "" {
		segs = append(segs, parent, "childFolders")
	}
	find := func() (string, error) {
		var page struct {
			Value []folderJSON `json:"value"`
		}
		u := s.c.path(query("$filter", "displayName eq "+odataString(display), "$select", "id,displayName"), segs...)
		if err := s.c.getJSON(ctx, "find folder "+display, u, &page); err != nil {
			return "", err
		}
		for _, f := range page.Value {
			if strings.EqualFold(f.DisplayName, display) && f.ID != "" {
				return f.ID, nil
			}
		}
		return "", nil
	}
	id, err := find()
	if err != nil || id != "" || !create {
		if err == nil && id == "" {
			err = fmt.Errorf("%w: %q in mailbox %s", ErrNoFolder, display, s.c.mailbox)
		}
		return id, err
	}
	body, err := json.Marshal(map[string]string{"displayName": display})
	if err != nil {
		return "", fmt.Errorf("graphsource: create folder %q: %w", display, err)
	}
	var f folderJSON
	err = s.c.callJSON(ctx, request{op: "create folder " + display, method: http.MethodPost, url: s.c.path("", segs...), body: body}, &f)
	var ge *Error
	if errors.As(err, &ge) && ge.Code == "ErrorFolderExists" {
		return find() // created meanwhile by someone else
	}
	if err != nil {
		return "", err
	}
	s.f.log.Info("graph folder created", "folder", display)
	return f.ID, nil
}

// pollFolders returns the folders this poll reads, in order: each of
// Folders, followed, with IncludeSubfolders, by the folders below it at any
// depth, as paths ("Inbox/Sub/Deeper", sorted). The error folder, the move
// folder and, when delete moves mails there, Deleted Items are never
// walked, nor anything below them: their mails were imported or failed
// already and would come back. Folders are told apart by id, so a folder
// both configured and found below another is read once. The ids found are
// remembered for the session: pollFolder does not look each path up again.
func (s *session) pollFolders(ctx context.Context) ([]string, error) {
	cfg := s.f.cfg
	if !cfg.IncludeSubfolders {
		return cfg.Folders, nil
	}
	skip := []string{cfg.ErrorFolder}
	switch {
	case cfg.AfterImport == mailsource.AfterImportMove:
		skip = append(skip, cfg.MoveFolder)
	case cfg.AfterImport == mailsource.AfterImportDelete && !cfg.PermanentDelete:
		skip = append(skip, "deleteditems")
	}
	seen := map[string]bool{} // folder ids: excluded, or walked already
	for _, path := range skip {
		if strings.TrimSpace(path) == "" {
			continue
		}
		id, err := s.folderID(ctx, path, false)
		switch {
		case err == nil:
			seen[id] = true
		case errors.Is(err, ErrNoFolder) || isRefusal(err):
			// Not there (yet), or not visible: the walk cannot meet it either.
		default:
			return nil, err
		}
	}
	var out []string
	for _, root := range cfg.Folders {
		id, err := s.folderID(ctx, root, false)
		switch {
		case err == nil:
		case errors.Is(err, ErrNoFolder) || isRefusal(err):
			out = append(out, root) // pollFolder reports it next to the others
			continue
		default:
			return nil, err
		}
		if seen[id] {
			continue // found below an earlier root, or the error or move folder
		}
		seen[id] = true
		out = append(out, root)
		var below []string
		if err := s.walk(ctx, root, id, seen, &below); err != nil {
			return nil, err
		}
		slices.Sort(below)
		out = append(out, below...)
	}
	return out, nil
}

// walk appends the folders below the folder id at path to out, depth
// first, skipping those in seen and everything below them.
func (s *session) walk(ctx context.Context, path, id string, seen map[string]bool, out *[]string) error {
	kids, err := s.childFolders(ctx, path, id)
	if isRefusal(err) {
		// Deleted since its parent was listed, or closed to the app: the
		// folder itself is still read, and reports what is wrong with it.
		s.f.log.Warn("graph folder not walked", "folder", path, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	for _, k := range kids {
		if k.ID == "" || seen[k.ID] || len(folderSegments(k.DisplayName)) != 1 {
			continue // a name with a slash would read as two levels of a path
		}
		seen[k.ID] = true
		sub := path + "/" + strings.TrimSpace(k.DisplayName)
		s.folderIDs[strings.ToLower(strings.Join(folderSegments(sub), "/"))] = k.ID
		*out = append(*out, sub)
		if err := s.walk(ctx, sub, k.ID, seen, out); err != nil {
			return err
		}
	}
	return nil
}

// childFolders lists the folders directly below the folder id, following
// @odata.nextLink.
func (s *session) childFolders(ctx context.Context, path, id string) ([]folderJSON, error) {
	op := "list folders below " + path
	u := s.c.path(query("$select", "id,displayName", "$top", strconv.Itoa(s.f.cfg.PageSize)), "mailFolders", id, "childFolders")
	var out []folderJSON
	seenLinks := map[string]bool{}
	for u != "" {
		var page struct {
			Value    []folderJSON `json:"value"`
			NextLink string       `json:"@odata.nextLink"`
		}
		if err := s.c.getJSON(ctx, op, u, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Value...)
		next := page.NextLink
		switch {
		case next == "":
		case !s.c.sameOrigin(next):
			return nil, &mailsource.ServerError{Op: op,
				Err: fmt.Errorf("%w: @odata.nextLink leads to another host (%.100s); the token is not sent there", ErrNotGraph, next)}
		case seenLinks[next]:
			return nil, &mailsource.ServerError{Op: op, Err: fmt.Errorf("%w: @odata.nextLink repeats itself", ErrNotGraph)}
		}
		seenLinks[next] = true
		u = next
	}
	return out, nil
}

// noteWalked remembers the folders this poll reads and returns a
// mailsource.ErrFolderVanished for each one the previous poll read and
// this one did not find.
func (f *Fetcher) noteWalked(folders []string) []error {
	if !f.cfg.IncludeSubfolders {
		return nil
	}
	now := make(map[string]bool, len(folders))
	for _, folder := range folders {
		now[folder] = true
	}
	f.mu.Lock()
	prev := f.walked
	f.walked = now
	f.mu.Unlock()
	var gone []string
	for folder := range prev {
		if !now[folder] {
			gone = append(gone, folder)
		}
	}
	slices.Sort(gone)
	errs := make([]error, 0, len(gone))
	for _, folder := range gone {
		f.log.Warn("graph folder no longer found; its mails are no longer read", "folder", folder)
		errs = append(errs, fmt.Errorf("%w: %q", mailsource.ErrFolderVanished, folder))
	}
	return errs
}
