-- The mailbox-status view (projections.MailboxStatus): one row per inbound
-- account with its last poll, the server's exact words on failure and the
-- running totals. Written only by the projection, in the same transaction as
-- its checkpoint; analysts may read it with plain SQL.
--
-- account_version and poll_version are the last applied versions of the
-- stream "inbound-accounts" and of the account's stream "mailbox-<id>": an
-- event at or below them is a redelivery and changes nothing.
-- TIMESTAMP columns hold UTC text that the driver reads back as time.
CREATE TABLE mailbox_status (
    account_id           TEXT      PRIMARY KEY,
    name                 TEXT      NOT NULL DEFAULT '',
    account_deleted      BOOLEAN   NOT NULL DEFAULT FALSE,
    last_poll_at         TIMESTAMP,
    last_finished_at     TIMESTAMP,
    last_error           TEXT      NOT NULL DEFAULT '',
    server_reply         TEXT      NOT NULL DEFAULT '',
    consecutive_failures INTEGER   NOT NULL DEFAULT 0,
    polls                INTEGER   NOT NULL DEFAULT 0,
    fetched              INTEGER   NOT NULL DEFAULT 0,
    failed               INTEGER   NOT NULL DEFAULT 0,
    oversize             INTEGER   NOT NULL DEFAULT 0,
    skipped              INTEGER   NOT NULL DEFAULT 0,
    deleted              INTEGER   NOT NULL DEFAULT 0,
    account_version      INTEGER   NOT NULL DEFAULT 0,
    poll_version         INTEGER   NOT NULL DEFAULT 0
) WITHOUT ROWID;
