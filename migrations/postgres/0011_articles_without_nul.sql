-- ticket_articles (0010) parses the events' JSON, and PostgreSQL cannot
-- turn a JSON string holding a NUL character ("\u0000", which a mail body
-- or subject may carry) into text: one such mail made every query over
-- the view fail. The view now reads each payload without its NUL escapes,
-- so those rows come back with the NULs dropped; every other row, and
-- every column, is as before.
--
-- Dropping the escapes must not touch the text "\u0000" written in a mail
-- (stored as "\\u0000"): the escaped backslashes are first swapped for
-- chr(1), which valid JSON text never holds raw (control characters are
-- always escaped), then every remaining "\u0000" is a NUL and goes, then
-- the backslashes come back. Payloads without a NUL escape (strpos, a
-- plain byte search) are read unchanged, as before.
DROP VIEW ticket_articles;

CREATE VIEW ticket_articles AS
WITH e AS NOT MATERIALIZED (
    -- the log's events, each payload without NUL escapes
    SELECT stream, stream_version, event_type, recorded_at,
        CASE WHEN strpos(payload::text, '\u0000') = 0 THEN payload
            ELSE replace(replace(replace(payload::text, '\\', chr(1)), '\u0000', ''), chr(1), '\\')::json END AS payload
    FROM events
), a AS (
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
    FROM e
    LEFT JOIN e m ON e.event_type IN ('TicketCreated', 'MailAppended', 'MailBundled', 'DeliveryFailureRecorded')
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
