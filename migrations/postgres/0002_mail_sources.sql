-- Which source keys of which account were committed, and how: the
-- idempotency index of mail import. Written in the same transaction as the
-- MailReceived / MailFailed event it names, so it never disagrees with them.
CREATE TABLE mail_sources (
    account_id  TEXT        NOT NULL,
    source_key  TEXT        NOT NULL,
    status      SMALLINT    NOT NULL, -- 1 received (or skipped), 2 failed
    mail_id     TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, source_key)
);
