-- Pushed or polled in the mailbox status: see
-- migrations/postgres/0016_mailbox_delivery.sql. TIMESTAMP columns hold UTC
-- text that the driver reads back as time.
ALTER TABLE mailbox_status ADD COLUMN delivery TEXT NOT NULL DEFAULT '';
ALTER TABLE mailbox_status ADD COLUMN delivery_since TIMESTAMP;
ALTER TABLE mailbox_status ADD COLUMN last_push_error TEXT NOT NULL DEFAULT '';
ALTER TABLE mailbox_status ADD COLUMN last_push_error_at TIMESTAMP;
ALTER TABLE mailbox_status ADD COLUMN delivery_version INTEGER NOT NULL DEFAULT 0;
