-- ticket_articles without NUL characters (see
-- migrations/postgres/0011_articles_without_nul.sql for why and how).
-- SQLite returned such rows, but with the NUL inside the text, where
-- SQLite's own string functions stop reading; the view now drops them as
-- the PostgreSQL one does, so both stores give the same rows.
DROP VIEW ticket_articles;

CREATE VIEW ticket_articles AS
WITH e AS NOT MATERIALIZED (
    -- the log's events, each payload without NUL escapes
    SELECT stream, stream_version, type, recorded_at,
        CASE WHEN instr(payload, '\u0000') = 0 THEN payload
            ELSE replace(replace(replace(payload, '\\', char(1)), '\u0000', ''), char(1), '\\') END AS payload
    FROM events
), a AS (
    SELECT substr(e.stream, 8) AS ticket_id,
        e.stream_version AS seq,
        e.type AS t,
        e.payload AS p,
        e.recorded_at,
        CASE WHEN e.type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'DeliveryFailureRecorded')
            THEN COALESCE(e.payload->>'caused_by', '') END AS mail_ref,
        m.payload AS mail,
        e.payload->>(CASE WHEN e.type = 'TicketCreated' THEN 'created_at'
            WHEN e.type IN ('ReplyQueued', 'AutoReplyQueued', 'ErrorMailQueued') THEN 'queued_at'
            ELSE 'at' END) AS at_text
    FROM e
    LEFT JOIN e m ON e.type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'DeliveryFailureRecorded')
        AND COALESCE(e.payload->>'caused_by', '') <> '' AND m.stream = 'mail-' || (e.payload->>'caused_by')
        AND m.stream_version = 1 AND m.type = 'MailReceived'
    WHERE substr(e.stream, 1, 7) = 'ticket-'
      AND e.type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'NoteAdded', 'DeliveryFailureRecorded',
          'ReplyQueued', 'AutoReplyQueued', 'ErrorMailQueued')
), b AS (
    -- the addresses as JSON arrays of {name, email}, written below
    SELECT a.*,
        CASE WHEN a.mail IS NOT NULL THEN json_array(json(a.mail->'from'))
            WHEN a.t IN ('MailAppended', 'MailBundled') THEN json_array(json(a.p->'from')) END AS from_list,
        CASE WHEN a.mail IS NOT NULL THEN a.mail->'to'
            WHEN a.t = 'ReplyQueued' THEN a.p->'to'
            WHEN a.t IN ('AutoReplyQueued', 'ErrorMailQueued') THEN json_array(json(a.p->'to')) END AS to_list,
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
        ELSE (SELECT COALESCE(group_concat(
                CASE WHEN COALESCE(l.value->>'name', '') = '' THEN COALESCE(l.value->>'email', '')
                    ELSE '"' || replace(replace(l.value->>'name', '\', '\\'), '"', '\"') || '" <'
                        || COALESCE(l.value->>'email', '') || '>' END, ', ' ORDER BY l.key), '')
            FROM json_each(CASE WHEN json_type(b.from_list) = 'array' THEN b.from_list ELSE '[]' END) AS l) END AS from_addr,
    (SELECT COALESCE(group_concat(
            CASE WHEN COALESCE(l.value->>'name', '') = '' THEN COALESCE(l.value->>'email', '')
                ELSE '"' || replace(replace(l.value->>'name', '\', '\\'), '"', '\"') || '" <'
                    || COALESCE(l.value->>'email', '') || '>' END, ', ' ORDER BY l.key), '')
        FROM json_each(CASE WHEN json_type(b.to_list) = 'array' THEN b.to_list ELSE '[]' END) AS l) AS to_addr,
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
        ELSE b.at_text END AS created_at
FROM b;
