package ticketing

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// intakeBatch is what the decisions of one subscription batch read and
// write. Up front (prefetch) it reads, with a few queries for the whole
// batch, the index rows and streams its mails name; each decision then
// reads from there and from what the batch's earlier decisions wrote, which
// reaches the database only at flush, in multi-row statements and one
// append. A lookup the prefetch did not cover goes to the database, and
// its rows are joined with the batch's own, so the answers are those a
// decision made alone, after the ones before it had committed, would get.
type intakeBatch struct {
	tx eventstore.Tx

	// Rows read from the index tables, by key. A key that is present was
	// looked up; an empty value means the database had none.
	numbers      map[int64]string    // ticket number -> ticket id
	messageIDs   map[string][]string // Message-ID -> ticket ids
	usersByEmail map[string][]string // e-mail -> user ids
	bundleSince  map[string]time.Time
	bundles      map[string][]bundleRow // sender e-mail -> tickets received since bundleSince
	namesFor     map[string]bool        // local parts whose taken names are in names
	names        map[string]bool        // user names read
	maxNumber    int64                  // -1 until read

	// Rows the batch's decisions added, not in the database before flush.
	newTickets    []bundleRow
	newMessageIDs []messageIDRow
	newUsers      []userRow

	streams map[string]*cachedStream
	reqs    []eventstore.AppendRequest
}

// bundleRow is a row of intake_tickets.
type bundleRow struct {
	ticketID, senderEmail, accountID string
	number, receivedAt               int64
}

type messageIDRow struct{ messageID, ticketID string }

type userRow struct{ userID, email, name string }

// cachedStream is a ticket, user or location stream folded, at version.
type cachedStream struct {
	version  int64
	ticket   domain.Ticket
	user     domain.User
	location domain.Location
}

func newIntakeBatch(tx eventstore.Tx) *intakeBatch {
	return &intakeBatch{tx: tx, numbers: map[int64]string{}, messageIDs: map[string][]string{},
		usersByEmail: map[string][]string{}, bundleSince: map[string]time.Time{}, bundles: map[string][]bundleRow{},
		namesFor: map[string]bool{}, names: map[string]bool{}, maxNumber: -1, streams: map[string]*cachedStream{}}
}

// inChunk bounds the IN list of one lookup and the rows of one INSERT: a
// few fixed statement texts, which the embedded store keeps intakeMail.
const inChunk = 100

// intakeMail is a mail of the batch with what its decision must look up.
type intakeMail struct {
	pending
	account domain.InboundAccount
	lookups domain.Lookups
}

// prefetch reads what the batch's mails name: the index rows first, then
// every stream those rows and the lookups name, with one ReadStreams.
func (b *intakeBatch) prefetch(ctx context.Context, mails []intakeMail) error {
	var (
		numbers      []int64
		mids, emails []string
		locals       []string
		streams      []string
	)
	for _, p := range mails {
		lk := p.lookups
		if lk.TicketNumber > 0 {
			numbers = append(numbers, lk.TicketNumber)
		}
		mids = append(mids, lk.MessageIDs...)
		if lk.MessageID != "" {
			mids = append(mids, lk.MessageID)
		}
		for _, o := range lk.Own {
			streams = append(streams, domain.TicketStream(o.TicketID))
		}
		if lk.SenderEmail == "" {
			continue
		}
		emails = append(emails, lk.SenderEmail)
		if p.account.CreateUnknownUsers {
			local, _, _ := strings.Cut(lk.SenderEmail, "@")
			locals = append(locals, strings.ToLower(local))
			streams = append(streams, domain.UserStream(domain.UserIDFor(lk.SenderEmail)))
		}
		if p.account.AutoBundle {
			if s, ok := b.bundleSince[lk.SenderEmail]; !ok || lk.BundleSince.Before(s) {
				b.bundleSince[lk.SenderEmail] = lk.BundleSince
			}
		}
		if lk.SenderDomain != "" && p.account.CreateLocationFromDomain {
			streams = append(streams, domain.LocationStream(domain.LocationIDFor(lk.SenderDomain)))
		}
	}
	if err := b.readNumbers(ctx, unique(numbers)); err != nil {
		return err
	}
	if err := b.readMessageIDs(ctx, unique(mids)); err != nil {
		return err
	}
	if err := b.readUsers(ctx, unique(emails)); err != nil {
		return err
	}
	if err := b.readNames(ctx, unique(locals)); err != nil {
		return err
	}
	if err := b.readBundles(ctx); err != nil {
		return err
	}
	for _, id := range b.numbers {
		streams = append(streams, domain.TicketStream(id))
	}
	for _, ids := range b.messageIDs {
		for _, id := range ids {
			streams = append(streams, domain.TicketStream(id))
		}
	}
	for _, ids := range b.usersByEmail {
		for _, id := range ids {
			streams = append(streams, domain.UserStream(id))
		}
	}
	for _, rows := range b.bundles {
		for _, r := range rows {
			streams = append(streams, domain.TicketStream(r.ticketID))
		}
	}
	return b.readStreams(ctx, unique(streams))
}

// unique returns vs sorted, without repeats.
func unique[T string | int64](vs []T) []T { return slices.Compact(slices.Sorted(slices.Values(vs))) }

// inList returns "$from, $from+1, ..." for n values.
func inList(from, n int) string {
	ph := make([]string, n)
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", from+i)
	}
	return strings.Join(ph, ", ")
}

// chunks calls fn with each run of at most inChunk values of vs, as args.
func chunks[T any](vs []T, fn func(args []any) error) error {
	for part := range slices.Chunk(vs, inChunk) {
		args := make([]any, len(part))
		for i, v := range part {
			args[i] = v
		}
		if err := fn(args); err != nil {
			return err
		}
	}
	return nil
}

func (b *intakeBatch) readNumbers(ctx context.Context, numbers []int64) error {
	for _, n := range numbers {
		b.numbers[n] = ""
	}
	return chunks(numbers, func(args []any) error {
		return b.scan(ctx, `SELECT number, ticket_id FROM intake_tickets WHERE number IN (`+inList(1, len(args))+`)`, args,
			func(sc func(...any) error) error {
				var n int64
				var id string
				if err := sc(&n, &id); err != nil {
					return err
				}
				b.numbers[n] = id
				return nil
			})
	})
}

func (b *intakeBatch) readMessageIDs(ctx context.Context, mids []string) error {
	for _, m := range mids {
		b.messageIDs[m] = nil
	}
	return chunks(mids, func(args []any) error {
		return b.scan(ctx, `SELECT message_id, ticket_id FROM intake_message_ids WHERE message_id IN (`+inList(1, len(args))+`)`, args,
			func(sc func(...any) error) error {
				var mid, id string
				if err := sc(&mid, &id); err != nil {
					return err
				}
				b.messageIDs[mid] = append(b.messageIDs[mid], id)
				return nil
			})
	})
}

func (b *intakeBatch) readUsers(ctx context.Context, emails []string) error {
	for _, e := range emails {
		b.usersByEmail[e] = nil
	}
	return chunks(emails, func(args []any) error {
		return b.scan(ctx, `SELECT email, user_id FROM intake_users WHERE email IN (`+inList(1, len(args))+`)`, args,
			func(sc func(...any) error) error {
				var email, id string
				if err := sc(&email, &id); err != nil {
					return err
				}
				b.usersByEmail[email] = append(b.usersByEmail[email], id)
				return nil
			})
	})
}

// readNames reads the user names that each local part would collide with
// (itself, or it followed by anything), as takenUserNames does for one.
func (b *intakeBatch) readNames(ctx context.Context, locals []string) error {
	for _, l := range locals {
		b.namesFor[l] = true
	}
	return chunks(locals, func(args []any) error {
		conds := make([]string, len(args))
		likes := make([]any, len(args))
		for i, a := range args {
			conds[i] = fmt.Sprintf("user_name LIKE $%d", len(args)+i+1)
			likes[i] = escapeLike(a.(string)) + "%"
		}
		q := `SELECT user_name FROM intake_users WHERE user_name IN (` + inList(1, len(args)) + `) OR ` + strings.Join(conds, " OR ")
		return b.scan(ctx, q, append(args, likes...), func(sc func(...any) error) error {
			var name string
			if err := sc(&name); err != nil {
				return err
			}
			b.names[name] = true
			return nil
		})
	})
}

// readBundles reads the tickets each auto-bundling sender opened since the
// earliest BundleSince of their mails in the batch.
func (b *intakeBatch) readBundles(ctx context.Context) error {
	emails := make([]string, 0, len(b.bundleSince))
	var since time.Time
	for e, s := range b.bundleSince {
		emails = append(emails, e)
		if since.IsZero() || s.Before(since) {
			since = s
		}
	}
	slices.Sort(emails)
	return chunks(emails, func(args []any) error {
		q := `SELECT ticket_id, number, sender_email, account_id, received_at FROM intake_tickets
			WHERE received_at >= $1 AND sender_email IN (` + inList(2, len(args)) + `)`
		return b.scan(ctx, q, append([]any{since.Unix()}, args...), func(sc func(...any) error) error {
			var r bundleRow
			if err := sc(&r.ticketID, &r.number, &r.senderEmail, &r.accountID, &r.receivedAt); err != nil {
				return err
			}
			if r.receivedAt >= b.bundleSince[r.senderEmail].Unix() {
				b.bundles[r.senderEmail] = append(b.bundles[r.senderEmail], r)
			}
			return nil
		})
	})
}

// scan runs a query in the batch's transaction and hands each row to fn.
func (b *intakeBatch) scan(ctx context.Context, q string, args []any, fn func(scan func(...any) error) error) error {
	rows, err := b.tx.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// readStreams reads and folds the named streams not cached yet; a stream
// without events is cached empty at version 0.
func (b *intakeBatch) readStreams(ctx context.Context, streams []string) error {
	streams = slices.DeleteFunc(streams, func(s string) bool { return b.streams[s] != nil })
	if len(streams) == 0 {
		return nil
	}
	for _, s := range streams {
		b.streams[s] = &cachedStream{}
	}
	evs, err := b.tx.ReadStreams(ctx, streams)
	if err != nil {
		return fmt.Errorf("read %d streams: %w", len(streams), err)
	}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("read %s: %w", re.Stream, err)
		}
		c := b.streams[re.Stream]
		if c == nil {
			continue
		}
		c.evolve(re.Stream, ev)
		c.version = re.StreamVersion
	}
	return nil
}

// evolve folds one event of stream into c (not its version).
func (c *cachedStream) evolve(stream string, ev domain.Event) {
	switch {
	case strings.HasPrefix(stream, domain.TicketStream("")):
		c.ticket = domain.EvolveTicket(c.ticket, ev)
	case strings.HasPrefix(stream, domain.UserStream("")):
		c.user = domain.EvolveUser(c.user, ev)
	case strings.HasPrefix(stream, domain.LocationStream("")):
		c.location = domain.EvolveLocation(c.location, ev)
	}
}

// stream returns the folded stream and remembers in l the version it was
// read at, which the decision's append then expects.
func (b *intakeBatch) stream(ctx context.Context, l *loaded, stream string) (*cachedStream, error) {
	if err := b.readStreams(ctx, []string{stream}); err != nil {
		return nil, err
	}
	c := b.streams[stream]
	l.versions[stream] = c.version
	return c, nil
}

func (b *intakeBatch) ticket(ctx context.Context, l *loaded, id string) (domain.Ticket, error) {
	c, err := b.stream(ctx, l, domain.TicketStream(id))
	if err != nil {
		return domain.Ticket{}, err
	}
	return c.ticket, nil
}

func (b *intakeBatch) user(ctx context.Context, l *loaded, id string) (domain.User, error) {
	c, err := b.stream(ctx, l, domain.UserStream(id))
	if err != nil {
		return domain.User{}, err
	}
	return c.user, nil
}

func (b *intakeBatch) location(ctx context.Context, l *loaded, id string) (domain.Location, error) {
	c, err := b.stream(ctx, l, domain.LocationStream(id))
	if err != nil {
		return domain.Location{}, err
	}
	return c.location, nil
}

// ticketByNumber returns the id of the ticket with number n, "" if none.
func (b *intakeBatch) ticketByNumber(ctx context.Context, n int64) (string, error) {
	for _, t := range b.newTickets {
		if t.number == n {
			return t.ticketID, nil
		}
	}
	if _, ok := b.numbers[n]; !ok {
		if err := b.readNumbers(ctx, []int64{n}); err != nil {
			return "", fmt.Errorf("look up ticket number %d: %w", n, err)
		}
	}
	return b.numbers[n], nil
}

// ticketsHolding returns the ids of the tickets holding a mail with
// Message-ID mid, in id order.
func (b *intakeBatch) ticketsHolding(ctx context.Context, mid string) ([]string, error) {
	if _, ok := b.messageIDs[mid]; !ok {
		if err := b.readMessageIDs(ctx, []string{mid}); err != nil {
			return nil, fmt.Errorf("look up Message-ID %s: %w", mid, err)
		}
	}
	ids := slices.Clone(b.messageIDs[mid])
	for _, r := range b.newMessageIDs {
		if r.messageID == mid {
			ids = append(ids, r.ticketID)
		}
	}
	return unique(ids), nil
}

// userByEmail returns the first user id (in id order) with the address.
func (b *intakeBatch) userByEmail(ctx context.Context, email string) (string, error) {
	if _, ok := b.usersByEmail[email]; !ok {
		if err := b.readUsers(ctx, []string{email}); err != nil {
			return "", fmt.Errorf("look up user %s: %w", email, err)
		}
	}
	ids := slices.Clone(b.usersByEmail[email])
	for _, u := range b.newUsers {
		if u.email == email {
			ids = append(ids, u.userID)
		}
	}
	if len(ids) == 0 {
		return "", nil
	}
	return slices.Min(ids), nil
}

// takenUserNames returns the user names an auto-created user named after
// email's local part could collide with.
func (b *intakeBatch) takenUserNames(ctx context.Context, email string) (map[string]bool, error) {
	local, _, _ := strings.Cut(email, "@")
	local = strings.ToLower(local)
	if !b.namesFor[local] {
		if err := b.readNames(ctx, []string{local}); err != nil {
			return nil, fmt.Errorf("taken user names: %w", err)
		}
	}
	prefix := escapeLike(local)
	taken := map[string]bool{}
	match := func(name string) {
		if name == local || strings.HasPrefix(name, prefix) {
			taken[name] = true
		}
	}
	for name := range b.names {
		match(name)
	}
	for _, u := range b.newUsers {
		match(u.name)
	}
	return taken, nil
}

// bundleCandidates returns the ids of the tickets opened by mails of email
// received since since, in number order.
func (b *intakeBatch) bundleCandidates(ctx context.Context, email string, since time.Time) ([]string, error) {
	from, ok := b.bundleSince[email]
	if !ok || since.Before(from) {
		b.bundleSince[email] = since
		delete(b.bundles, email)
		ids, err := queryRows(ctx, b.tx, `SELECT ticket_id, number, sender_email, account_id, received_at FROM intake_tickets
			WHERE sender_email = $1 AND received_at >= $2`, email, since.Unix())
		if err != nil {
			return nil, fmt.Errorf("bundle candidates: %w", err)
		}
		b.bundles[email] = ids
	}
	var rows []bundleRow
	for _, r := range append(slices.Clone(b.bundles[email]), b.newTickets...) {
		if r.senderEmail == email && r.receivedAt >= since.Unix() {
			rows = append(rows, r)
		}
	}
	slices.SortFunc(rows, func(x, y bundleRow) int { return int(x.number - y.number) })
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ticketID
	}
	return ids, nil
}

func queryRows(ctx context.Context, tx eventstore.Tx, q string, args ...any) ([]bundleRow, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []bundleRow
	for rows.Next() {
		var r bundleRow
		if err := rows.Scan(&r.ticketID, &r.number, &r.senderEmail, &r.accountID, &r.receivedAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// nextTicketNumber is the number a new ticket gets now.
func (b *intakeBatch) nextTicketNumber(ctx context.Context) (int64, error) {
	if b.maxNumber < 0 {
		if err := b.tx.QueryRow(ctx, `SELECT COALESCE(MAX(number), 0) FROM intake_tickets`).Scan(&b.maxNumber); err != nil {
			return 0, fmt.Errorf("next ticket number: %w", err)
		}
	}
	return max(b.maxNumber+1, domain.FirstTicketNumber), nil
}

// record takes in a decision: its appends, which later decisions of the
// batch then see in the streams they read, and its index rows.
func (b *intakeBatch) record(events []domain.Event, reqs []eventstore.AppendRequest, m domain.MailReceived) {
	b.reqs = append(b.reqs, reqs...)
	for _, e := range events {
		stream := streamOf(e, m.MailID)
		if c := b.streams[stream]; c != nil {
			c.evolve(stream, e)
			c.version++
		} else if !strings.HasPrefix(stream, MailStream("")) {
			c = &cachedStream{}
			c.evolve(stream, e)
			c.version = 1
			b.streams[stream] = c
		}
		switch e := e.(type) {
		case domain.TicketCreated:
			b.newTickets = append(b.newTickets, bundleRow{ticketID: e.TicketID, number: e.Number,
				senderEmail: strings.ToLower(strings.TrimSpace(m.From.Email)), accountID: m.AccountID, receivedAt: m.ReceivedAt.Unix()})
			b.maxNumber = max(b.maxNumber, e.Number)
			b.addMessageID(m.MessageID, e.TicketID)
		case domain.MailAppended:
			b.addMessageID(m.MessageID, e.TicketID)
		case domain.MailBundled:
			b.addMessageID(m.MessageID, e.TicketID)
		case domain.UserAutoCreated:
			b.newUsers = append(b.newUsers, userRow{userID: e.UserID, email: strings.ToLower(strings.TrimSpace(e.Email)),
				name: strings.ToLower(e.UserName)})
		}
	}
}

func (b *intakeBatch) addMessageID(messageID, ticketID string) {
	if messageID = strings.Trim(strings.TrimSpace(messageID), "<>"); messageID != "" {
		b.newMessageIDs = append(b.newMessageIDs, messageIDRow{messageID: messageID, ticketID: ticketID})
	}
}

// flush writes the batch's decisions: every append in one call (in the
// decisions' order; a stream twice sees its earlier events), then the
// index rows in multi-row statements.
func (b *intakeBatch) flush(ctx context.Context) error {
	if len(b.reqs) > 0 {
		if _, err := b.tx.Append(ctx, b.reqs...); err != nil {
			return fmt.Errorf("append the decisions of %d mails: %w", len(b.reqs), err)
		}
	}
	err := insertRows(ctx, b.tx, `INSERT INTO intake_tickets (ticket_id, number, sender_email, account_id, received_at) VALUES `,
		` ON CONFLICT (ticket_id) DO NOTHING`, 5, b.newTickets, func(r bundleRow) []any {
			return []any{r.ticketID, r.number, r.senderEmail, r.accountID, r.receivedAt}
		})
	if err != nil {
		return fmt.Errorf("index new tickets: %w", err)
	}
	slices.SortFunc(b.newMessageIDs, func(x, y messageIDRow) int {
		return strings.Compare(x.messageID+"\x00"+x.ticketID, y.messageID+"\x00"+y.ticketID)
	})
	err = insertRows(ctx, b.tx, `INSERT INTO intake_message_ids (message_id, ticket_id) VALUES `,
		` ON CONFLICT (message_id, ticket_id) DO NOTHING`, 2, slices.Compact(b.newMessageIDs), func(r messageIDRow) []any {
			return []any{r.messageID, r.ticketID}
		})
	if err != nil {
		return fmt.Errorf("index Message-IDs: %w", err)
	}
	err = insertRows(ctx, b.tx, `INSERT INTO intake_users (user_id, email, user_name) VALUES `,
		` ON CONFLICT (user_id) DO NOTHING`, 3, b.newUsers, func(r userRow) []any { return []any{r.userID, r.email, r.name} })
	if err != nil {
		return fmt.Errorf("index new users: %w", err)
	}
	return nil
}

// insertRows inserts rows in statements of at most inChunk rows.
func insertRows[T any](ctx context.Context, tx eventstore.Tx, head, tail string, cols int, rows []T, values func(T) []any) error {
	for part := range slices.Chunk(rows, inChunk) {
		vals := make([]string, len(part))
		args := make([]any, 0, cols*len(part))
		for i, r := range part {
			vals[i] = "(" + inList(cols*i+1, cols) + ")"
			args = append(args, values(r)...)
		}
		if _, err := tx.Exec(ctx, head+strings.Join(vals, ", ")+tail, args...); err != nil {
			return err
		}
	}
	return nil
}
