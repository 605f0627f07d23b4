-- Mails set aside in the mailbox status of their account: see
-- migrations/postgres/0012_mailbox_set_aside.sql. TIMESTAMP columns hold
-- UTC text that the driver reads back as time.
CREATE TABLE mailbox_set_aside (
    subscriber   TEXT      NOT NULL,
    position     INTEGER   NOT NULL,
    account_id   TEXT      NOT NULL,
    event_id     TEXT      NOT NULL,
    error        TEXT      NOT NULL,
    set_aside_at TIMESTAMP,
    PRIMARY KEY (subscriber, position)
) WITHOUT ROWID;
CREATE INDEX mailbox_set_aside_account ON mailbox_set_aside (account_id);

ALTER TABLE mailbox_status ADD COLUMN last_set_aside_error TEXT NOT NULL DEFAULT '';
ALTER TABLE mailbox_status ADD COLUMN last_set_aside_at TIMESTAMP;
