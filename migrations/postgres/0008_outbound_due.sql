-- The due index holds only the mails waiting for an attempt (pending and
-- retry). Rows being sent or done (sent, failed, suppressed) carry the
-- largest BIGINT as next_attempt_at and stay out of it, so the claim walks
-- a small index however many mails were ever sent, and marking a mail
-- "sending" or "sent" writes no entry into it. The claim names the same
-- predicate, which SQLite needs to use a partial index.
DROP INDEX outbound_mails_due;
CREATE INDEX outbound_mails_due ON outbound_mails (next_attempt_at, outgoing_mail_id)
    WHERE next_attempt_at < 9223372036854775807;

-- Room on each page, so that marking a claimed mail "sent" (state and
-- stream_version change, next_attempt_at stays the largest BIGINT) is a
-- heap-only update that writes no index entry.
ALTER TABLE outbound_mails SET (fillfactor = 75);
