package imapsource

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// ErrNoTrash means AfterImport is trash, the server marks no folder \Trash
// and Config.TrashFolder is empty. The mails stay, committed, and the step
// is tried again on the next poll.
var ErrNoTrash = errors.New("imapsource: the server marks no folder \\Trash (RFC 6154) and the account names none (trash_folder)")

// ErrNoSubscribedList means OnlySubscribed is set and the server has
// neither LIST-EXTENDED (RFC 5258) nor IMAP4rev2, so LIST cannot select
// the subscribed folders.
var ErrNoSubscribedList = errors.New("imapsource: only_subscribed needs LIST-EXTENDED (RFC 5258) or IMAP4rev2, which the server does not offer")

// pollFolders returns the folders this session reads, in order: each of
// Folders, followed, with IncludeSubfolders, by the folders below it that
// can be selected (sorted by name). The error folder, the move folder and
// the trash folder are never walked, nor anything below them; the source
// key of every folder is its own (SourceKey).
func (s *session) pollFolders() ([]string, error) {
	cfg := s.f.cfg
	if !cfg.IncludeSubfolders {
		return cfg.Folders, nil
	}
	excluded := []string{cfg.ErrorFolder}
	switch cfg.AfterImport {
	case mailsource.AfterImportMove:
		excluded = append(excluded, cfg.MoveFolder)
	case mailsource.AfterImportTrash:
		if trash, err := s.trashFolder(); err == nil {
			excluded = append(excluded, trash)
		} else if cfg.TrashFolder != "" {
			excluded = append(excluded, cfg.TrashFolder)
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, root := range cfg.Folders {
		if !seen[root] {
			seen[root] = true
			out = append(out, root)
		}
		below, delim, err := s.subfolders(root)
		if err != nil {
			return nil, err
		}
		for _, f := range below {
			if !seen[f] && !underAny(f, excluded, delim) {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// subfolders lists the selectable folders below root with the delimiter
// the server reports for root; a root the server does not list has none
// (its SELECT then fails and is reported).
func (s *session) subfolders(root string) (_ []string, delim rune, _ error) {
	boxes, err := s.c.List("", root, nil).Collect()
	if err != nil {
		return nil, 0, serverError("LIST "+root, err)
	}
	found := false
	for _, b := range boxes {
		if sameFolder(b.Mailbox, root) {
			delim, found = b.Delim, true
			break
		}
	}
	if !found || delim == 0 { // a flat mailbox has no folders below any other
		return nil, 0, nil
	}
	prefix := root + string(delim)
	var opts *imap.ListOptions
	if s.f.cfg.OnlySubscribed {
		if !s.c.Caps().Has(imap.CapListExtended) && !s.c.Caps().Has(imap.CapIMAP4rev2) {
			return nil, 0, ErrNoSubscribedList
		}
		opts = &imap.ListOptions{SelectSubscribed: true}
	}
	listed, err := s.c.List("", prefix+"*", opts).Collect()
	if err != nil {
		return nil, 0, serverError("LIST "+prefix+"*", err)
	}
	var out []string
	for _, b := range listed {
		if len(b.Mailbox) <= len(prefix) || !sameFolder(b.Mailbox[:len(prefix)], prefix) ||
			slices.Contains(b.Attrs, imap.MailboxAttrNoSelect) || slices.Contains(b.Attrs, imap.MailboxAttrNonExistent) {
			continue // LIST (SUBSCRIBED) also names subscribed folders that no longer exist
		}
		s.existing[b.Mailbox] = true
		out = append(out, b.Mailbox)
	}
	slices.Sort(out)
	return out, delim, nil
}

// trashFolder returns the folder trash moves mails to: the one the server
// marks \Trash, else Config.TrashFolder, else ErrNoTrash. It is looked up
// once per session.
func (s *session) trashFolder() (string, error) {
	if s.trash != "" {
		return s.trash, nil
	}
	caps := s.c.Caps()
	var opts *imap.ListOptions
	if caps.Has(imap.CapSpecialUse) && (caps.Has(imap.CapListExtended) || caps.Has(imap.CapIMAP4rev2)) {
		opts = &imap.ListOptions{SelectSpecialUse: true}
	}
	// Without the select option the attributes still come with a plain
	// LIST on servers that have SPECIAL-USE (RFC 6154 section 2).
	boxes, err := s.c.List("", "*", opts).Collect()
	if err != nil {
		return "", serverError("LIST (SPECIAL-USE)", err)
	}
	for _, b := range boxes {
		if slices.Contains(b.Attrs, imap.MailboxAttrTrash) && !slices.Contains(b.Attrs, imap.MailboxAttrNoSelect) &&
			!slices.Contains(b.Attrs, imap.MailboxAttrNonExistent) {
			s.trash = b.Mailbox
			return s.trash, nil
		}
	}
	if s.f.cfg.TrashFolder == "" {
		return "", ErrNoTrash
	}
	s.trash = s.f.cfg.TrashFolder
	return s.trash, nil
}

// noteWalked remembers the folders walked below Folders and returns an
// mailsource.ErrFolderVanished for each one the previous poll read and this one does
// not list.
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
		f.log.Warn("imap folder no longer listed; its mails are no longer read", "folder", folder)
		errs = append(errs, fmt.Errorf("%w: %q", mailsource.ErrFolderVanished, folder))
	}
	return errs
}

// sameFolder compares mailbox names: exactly, except INBOX, whose name is
// case-insensitive (RFC 9051 section 5.1), also as a prefix.
func sameFolder(a, b string) bool {
	if a == b {
		return true
	}
	const inbox = "INBOX"
	return len(a) >= len(inbox) && len(b) >= len(inbox) && strings.EqualFold(a[:len(inbox)], inbox) &&
		strings.EqualFold(b[:len(inbox)], inbox) && a[len(inbox):] == b[len(inbox):]
}

// underAny says whether folder is one of roots or lies below one, in any
// letter case (a folder left out by mistake is safer than one walked).
func underAny(folder string, roots []string, delim rune) bool {
	for _, r := range roots {
		if r == "" {
			continue
		}
		if strings.EqualFold(folder, r) || delim != 0 && len(folder) > len(r) &&
			strings.EqualFold(folder[:len(r)], r) && strings.HasPrefix(folder[len(r):], string(delim)) {
			return true
		}
	}
	return false
}
