-- Whether an inbound account's new mail is pushed (IMAP IDLE) or polled, in
-- the mailbox status (projections.MailboxStatus, from
-- domain.MailboxDeliveryChanged): delivery is 'pushed' or 'polled' since
-- delivery_since ('' until the scheduler has run the account);
-- last_push_error and last_push_error_at keep the last reason a pushed
-- account fell back to polling, also once it is pushed again. delivery_version is the last applied version of the account's
-- stream "mailbox-<id>" among these events (a redelivery changes nothing).
ALTER TABLE mailbox_status
    ADD COLUMN delivery           TEXT        NOT NULL DEFAULT '',
    ADD COLUMN delivery_since     TIMESTAMPTZ,
    ADD COLUMN last_push_error    TEXT        NOT NULL DEFAULT '',
    ADD COLUMN last_push_error_at TIMESTAMPTZ,
    ADD COLUMN delivery_version   BIGINT      NOT NULL DEFAULT 0;
