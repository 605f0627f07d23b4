-- Ticket articles are read from the log instead of being copied into a
-- table. Every article is one event of its ticket's stream, and a mail's
-- content (addresses, bodies, raw message) is in the MailReceived its event
-- names: the table held a second copy of every mail body, and a rebuild
-- spent most of its time writing and indexing it (projections.Tickets).
-- The API reads a ticket's articles from its stream; this view gives
-- analysts the same rows, column for column (projections.articleOf and
-- Article.fill say what each event gives). It reads the mail through
-- events_stream_version_key, and a whole-table query parses each article's
-- JSON: for heavy analysis, materialise it once
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
            THEN COALESCE(e.payload->>'caused_by', '') END AS mail_ref,
        m.payload AS mail,
        e.payload->>(CASE WHEN e.event_type = 'TicketCreated' THEN 'created_at'
            WHEN e.event_type IN ('ReplyQueued', 'AutoReplyQueued', 'ErrorMailQueued') THEN 'queued_at'
            ELSE 'at' END) AS at_text
    FROM events e
    LEFT JOIN events m ON e.event_type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'DeliveryFailureRecorded')
        AND COALESCE(e.payload->>'caused_by', '') <> '' AND m.stream = 'mail-' || (e.payload->>'caused_by')
        AND m.stream_version = 1 AND m.event_type = 'MailReceived'
    WHERE e.stream LIKE 'ticket-%'
      AND e.event_type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'NoteAdded', 'DeliveryFailureRecorded',
          'ReplyQueued', 'AutoReplyQueued', 'ErrorMailQueued')
), b AS (
    -- the addresses as JSON arrays of {name, email}, written below
    SELECT a.*,
        CASE WHEN a.mail IS NOT NULL THEN json_build_array(a.mail->'from')
            WHEN a.t IN ('MailAppended', 'MailBundled') THEN json_build_array(a.p->'from') END AS from_list,
        CASE WHEN a.mail IS NOT NULL THEN a.mail->'to'
            WHEN a.t = 'ReplyQueued' THEN a.p->'to'
            WHEN a.t IN ('AutoReplyQueued', 'ErrorMailQueued') THEN json_build_array(a.p->'to') END AS to_list,
        CASE WHEN a.t IN ('NoteAdded', 'DeliveryFailureRecorded') THEN ''
            ELSE COALESCE(a.p->>'message_id', '') END AS message_id,
        CASE a.t WHEN 'NoteAdded' THEN ''
            WHEN 'DeliveryFailureRecorded' THEN 'delivery failed: ' || COALESCE(a.p->>'bounced_message_id', '')
            ELSE COALESCE(a.p->>'subject', '') END AS subject
    FROM a
)
SELECT b.ticket_id, b.seq,
    CASE b.t WHEN 'NoteAdded' THEN 'note' WHEN 'DeliveryFailureRecorded' THEN 'delivery_failure'
        WHEN 'ReplyQueued' THEN 'reply' WHEN 'AutoReplyQueued' THEN 'auto_reply'
        WHEN 'ErrorMailQueued' THEN 'error_mail' ELSE 'mail' END AS kind,
    CASE WHEN b.mail IS NULL THEN COALESCE(b.mail_ref, '') ELSE COALESCE(b.mail->>'mail_id', '') END AS mail_id,
    CASE WHEN b.message_id = '' AND b.mail IS NOT NULL THEN COALESCE(b.mail->>'message_id', '')
        ELSE b.message_id END AS message_id,
    CASE WHEN b.t IN ('NoteAdded', 'ReplyQueued') THEN COALESCE(b.p->>'actor', '')
        ELSE (SELECT COALESCE(string_agg(
                CASE WHEN COALESCE(l.x->>'name', '') = '' THEN COALESCE(l.x->>'email', '')
                    ELSE '"' || replace(replace(l.x->>'name', '\', '\\'), '"', '\"') || '" <'
                        || COALESCE(l.x->>'email', '') || '>' END, ', ' ORDER BY l.i), '')
            FROM json_array_elements(CASE WHEN json_typeof(b.from_list) = 'array' THEN b.from_list ELSE '[]' END)
                WITH ORDINALITY AS l(x, i)) END AS from_addr,
    (SELECT COALESCE(string_agg(
            CASE WHEN COALESCE(l.x->>'name', '') = '' THEN COALESCE(l.x->>'email', '')
                ELSE '"' || replace(replace(l.x->>'name', '\', '\\'), '"', '\"') || '" <'
                    || COALESCE(l.x->>'email', '') || '>' END, ', ' ORDER BY l.i), '')
        FROM json_array_elements(CASE WHEN json_typeof(b.to_list) = 'array' THEN b.to_list ELSE '[]' END)
            WITH ORDINALITY AS l(x, i)) AS to_addr,
    CASE WHEN b.subject = '' AND b.mail IS NOT NULL THEN COALESCE(b.mail->>'subject', '')
        ELSE b.subject END AS subject,
    CASE WHEN b.mail IS NOT NULL THEN COALESCE(b.mail->>'text_body', '')
        ELSE CASE b.t WHEN 'NoteAdded' THEN COALESCE(b.p->>'text', '')
            WHEN 'DeliveryFailureRecorded' THEN COALESCE(b.p->>'reason', '')
            WHEN 'ReplyQueued' THEN COALESCE(b.p->>'body', '')
            WHEN 'AutoReplyQueued' THEN 'template ' || COALESCE(b.p->>'template', '')
            WHEN 'ErrorMailQueued' THEN COALESCE(b.p->>'reason', '')
            ELSE '' END END AS text_body,
    COALESCE(b.mail->>'html_body', '') AS html_body,
    COALESCE(b.mail->>'blob_ref', '') AS blob_ref,
    CASE WHEN b.t IN ('NoteAdded', 'ReplyQueued') THEN COALESCE(b.p->>'actor', '') ELSE '' END AS actor,
    CASE WHEN b.t <> 'TicketCreated' AND COALESCE(b.at_text, '') IN ('', '0001-01-01T00:00:00Z') THEN b.recorded_at
        ELSE b.at_text::timestamptz END AS created_at
FROM b;
