-- The mailbox status counts mails from their events of record: see
-- migrations/postgres/0013_mailbox_counts_from_events.sql.
CREATE TABLE mailbox_counted (
    event_id TEXT PRIMARY KEY
) WITHOUT ROWID;

DELETE FROM mailbox_status;
DELETE FROM mailbox_set_aside;
DELETE FROM subscription_checkpoints WHERE name = 'projection.mailbox_status.v1';
