-- Ticket articles are read from the log instead of being copied into a
-- table. Every article is one event of its ticket's stream, and a mail's
-- content (addresses, bodies, raw message) is in the MailReceived its event
-- names: the table held a second copy of every mail body, and a rebuild
-- spent most of its time writing and indexing it (projections.Tickets).
-- The API reads a ticket's articles from its stream; this view gives
-- analysts the same rows, column for column, over the log. It reads the
-- mail through events_stream_version_key, and a whole-table query parses
-- each article's JSON: for heavy analysis, materialise it once
-- (CREATE TABLE ... AS SELECT * FROM ticket_articles).
DROP TABLE ticket_articles;

CREATE VIEW ticket_articles AS
WITH a AS (
    SELECT substr(e.stream, 8) COLLATE "C" AS ticket_id,
        e.stream_version AS seq,
        e.event_type AS t,
        e.payload AS p,
        e.recorded_at,
        CASE WHEN e.event_type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'DeliveryFailureRecorded')
            THEN COALESCE(e.payload->>'caused_by', '') END AS mail_ref
    FROM events e
    WHERE e.stream LIKE 'ticket-%'
      AND e.event_type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'NoteAdded', 'DeliveryFailureRecorded',
          'ReplyQueued', 'AutoReplyQueued', 'ErrorMailQueued')
), b AS (
    SELECT a.ticket_id, a.seq, a.t, a.mail_ref,
        CASE a.t WHEN 'NoteAdded' THEN 'note' WHEN 'DeliveryFailureRecorded' THEN 'delivery_failure'
            WHEN 'ReplyQueued' THEN 'reply' WHEN 'AutoReplyQueued' THEN 'auto_reply'
            WHEN 'ErrorMailQueued' THEN 'error_mail' ELSE 'mail' END AS kind,
        CASE WHEN a.t IN ('NoteAdded', 'DeliveryFailureRecorded') THEN ''
            ELSE COALESCE(a.p->>'message_id', '') END AS message_id,
        CASE a.t WHEN 'NoteAdded' THEN ''
            WHEN 'DeliveryFailureRecorded' THEN 'delivery failed: ' || COALESCE(a.p->>'bounced_message_id', '')
            ELSE COALESCE(a.p->>'subject', '') END AS subject,
        CASE WHEN a.t IN ('MailAppended', 'MailBundled') THEN
                CASE WHEN COALESCE(a.p->'from'->>'name', '') = '' THEN COALESCE(a.p->'from'->>'email', '')
                    ELSE '"' || replace(replace(a.p->'from'->>'name', '\', '\\'), '"', '\"') || '" <'
                        || COALESCE(a.p->'from'->>'email', '') || '>' END
            WHEN a.t IN ('NoteAdded', 'ReplyQueued') THEN COALESCE(a.p->>'actor', '')
            ELSE '' END AS from_addr,
        CASE WHEN a.t = 'ReplyQueued' THEN
                (SELECT COALESCE(string_agg(
                    CASE WHEN COALESCE(l.x->>'name', '') = '' THEN COALESCE(l.x->>'email', '')
                        ELSE '"' || replace(replace(l.x->>'name', '\', '\\'), '"', '\"') || '" <'
                            || COALESCE(l.x->>'email', '') || '>' END, ', ' ORDER BY l.i), '')
                FROM json_array_elements(CASE WHEN json_typeof(a.p->'to') = 'array' THEN a.p->'to' ELSE '[]'::json END)
                    WITH ORDINALITY AS l(x, i))
            WHEN a.t IN ('AutoReplyQueued', 'ErrorMailQueued') THEN
                CASE WHEN COALESCE(a.p->'to'->>'name', '') = '' THEN COALESCE(a.p->'to'->>'email', '')
                    ELSE '"' || replace(replace(a.p->'to'->>'name', '\', '\\'), '"', '\"') || '" <'
                        || COALESCE(a.p->'to'->>'email', '') || '>' END
            ELSE '' END AS to_addr,
        CASE a.t WHEN 'NoteAdded' THEN COALESCE(a.p->>'text', '')
            WHEN 'DeliveryFailureRecorded' THEN COALESCE(a.p->>'reason', '')
            WHEN 'ReplyQueued' THEN COALESCE(a.p->>'body', '')
            WHEN 'AutoReplyQueued' THEN 'template ' || COALESCE(a.p->>'template', '')
            WHEN 'ErrorMailQueued' THEN COALESCE(a.p->>'reason', '')
            ELSE '' END AS text_body,
        CASE WHEN a.t IN ('NoteAdded', 'ReplyQueued') THEN COALESCE(a.p->>'actor', '') ELSE '' END AS actor,
        CASE WHEN a.t = 'TicketCreated' THEN (a.p->>'created_at')::timestamptz
            ELSE CASE WHEN COALESCE(a.p->>(CASE WHEN a.t IN ('ReplyQueued', 'AutoReplyQueued', 'ErrorMailQueued')
                    THEN 'queued_at' ELSE 'at' END), '') IN ('', '0001-01-01T00:00:00Z') THEN a.recorded_at
                ELSE (a.p->>(CASE WHEN a.t IN ('ReplyQueued', 'AutoReplyQueued', 'ErrorMailQueued')
                    THEN 'queued_at' ELSE 'at' END))::timestamptz END
            END AS created_at
    FROM a
)
SELECT b.ticket_id, b.seq, b.kind,
    CASE WHEN m.payload IS NULL THEN COALESCE(b.mail_ref, '') ELSE COALESCE(m.payload->>'mail_id', '') END AS mail_id,
    CASE WHEN b.message_id = '' AND m.payload IS NOT NULL THEN COALESCE(m.payload->>'message_id', '')
        ELSE b.message_id END AS message_id,
    CASE WHEN m.payload IS NULL THEN b.from_addr
        WHEN COALESCE(m.payload->'from'->>'name', '') = '' THEN COALESCE(m.payload->'from'->>'email', '')
        ELSE '"' || replace(replace(m.payload->'from'->>'name', '\', '\\'), '"', '\"') || '" <'
            || COALESCE(m.payload->'from'->>'email', '') || '>' END AS from_addr,
    CASE WHEN m.payload IS NULL THEN b.to_addr
        ELSE (SELECT COALESCE(string_agg(
                CASE WHEN COALESCE(l.x->>'name', '') = '' THEN COALESCE(l.x->>'email', '')
                    ELSE '"' || replace(replace(l.x->>'name', '\', '\\'), '"', '\"') || '" <'
                        || COALESCE(l.x->>'email', '') || '>' END, ', ' ORDER BY l.i), '')
            FROM json_array_elements(CASE WHEN json_typeof(m.payload->'to') = 'array' THEN m.payload->'to' ELSE '[]'::json END)
                WITH ORDINALITY AS l(x, i)) END AS to_addr,
    CASE WHEN b.subject = '' AND m.payload IS NOT NULL THEN COALESCE(m.payload->>'subject', '')
        ELSE b.subject END AS subject,
    CASE WHEN m.payload IS NULL THEN b.text_body ELSE COALESCE(m.payload->>'text_body', '') END AS text_body,
    CASE WHEN m.payload IS NULL THEN '' ELSE COALESCE(m.payload->>'html_body', '') END AS html_body,
    CASE WHEN m.payload IS NULL THEN '' ELSE COALESCE(m.payload->>'blob_ref', '') END AS blob_ref,
    b.actor, b.created_at
FROM b
LEFT JOIN events m ON b.mail_ref <> '' AND m.stream = 'mail-' || b.mail_ref AND m.stream_version = 1
    AND m.event_type = 'MailReceived';
