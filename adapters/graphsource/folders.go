package graphsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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
