-- The outbound saga's state (package ticketing, outbound.go). The saga's
-- subscription writes it in the same transaction as its checkpoint, so a
-- queued mail is taken on exactly once; the sender then moves each row
-- through pending -> sending -> sent | retry | failed, committing "sending"
-- (with the attempt count) before it talks SMTP and "sent" as soon as the
-- server accepted the message.
CREATE TABLE outbound_mails (
    outgoing_mail_id TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL,
    ticket_id        TEXT    NOT NULL,
    message_id       TEXT    NOT NULL,
    event_type       TEXT    NOT NULL, -- the queued-mail event, kept to render it
    schema_version   INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL, -- pending | sending | retry | sent | failed | suppressed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL, -- unix milliseconds; the largest BIGINT while not due (sending, done)
    queued_at        BIGINT  NOT NULL, -- unix milliseconds
    stream_version   BIGINT  NOT NULL DEFAULT 0 -- version of OutboundMailStream
);
-- Due rows are found in order without sorting: rows that are not due
-- (sending, sent, failed, suppressed) sit at the end of this index.
CREATE INDEX outbound_mails_due ON outbound_mails (next_attempt_at, outgoing_mail_id);

-- Automatic mails let through, per recipient, for the per-recipient limit.
CREATE TABLE outbound_recipients (
    recipient        TEXT   NOT NULL,
    outgoing_mail_id TEXT   NOT NULL,
    queued_at        BIGINT NOT NULL, -- unix milliseconds
    PRIMARY KEY (recipient, outgoing_mail_id)
);
CREATE INDEX outbound_recipients_time ON outbound_recipients (recipient, queued_at);
