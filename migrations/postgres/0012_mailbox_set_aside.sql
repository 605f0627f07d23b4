-- Mails set aside (domain.SubscriberEventSetAside of a mail's event) show in
-- the mailbox status of their account (projections.MailboxStatus): a mail
-- the intake could not decide no longer stops all ticket creation, and the
-- admin must see which account it came from and why.
--
-- mailbox_set_aside holds the mails set aside and not retried since, one
-- row per subscriber and event position (a retry deletes it, a second
-- set-aside writes it again, so a redelivery changes nothing); an
-- account's set_aside count is its number of rows. last_set_aside_error and
-- last_set_aside_at stay after a retry: they are the last one's.
CREATE TABLE mailbox_set_aside (
    subscriber   TEXT        NOT NULL,
    position     BIGINT      NOT NULL,
    account_id   TEXT        NOT NULL,
    event_id     TEXT        NOT NULL,
    error        TEXT        NOT NULL,
    set_aside_at TIMESTAMPTZ,
    PRIMARY KEY (subscriber, position)
);
CREATE INDEX mailbox_set_aside_account ON mailbox_set_aside (account_id);

ALTER TABLE mailbox_status
    ADD COLUMN last_set_aside_error TEXT NOT NULL DEFAULT '',
    ADD COLUMN last_set_aside_at    TIMESTAMPTZ;
