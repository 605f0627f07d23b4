-- The mail-intake process manager's own lookup tables (package ticketing).
-- It writes them in the same transaction as the events it appends and its
-- checkpoint, so they always agree with the log; they are rebuilt by
-- replaying it. Not an analyst view: use the projections' tables for that.
CREATE TABLE intake_tickets (
    ticket_id    TEXT   PRIMARY KEY,
    number       BIGINT NOT NULL UNIQUE,
    sender_email TEXT   NOT NULL,
    account_id   TEXT   NOT NULL,
    received_at  BIGINT NOT NULL -- unix seconds of the creating mail
);
CREATE INDEX intake_tickets_sender ON intake_tickets (sender_email, received_at);

CREATE TABLE intake_message_ids (
    message_id TEXT NOT NULL,
    ticket_id  TEXT NOT NULL,
    PRIMARY KEY (message_id, ticket_id)
);

CREATE TABLE intake_users (
    user_id    TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    user_name  TEXT NOT NULL
);
CREATE INDEX intake_users_email ON intake_users (email);
CREATE UNIQUE INDEX intake_users_name ON intake_users (user_name);

-- Mails already decided: a MailReceived delivered twice is decided once.
CREATE TABLE intake_decided (
    mail_id TEXT PRIMARY KEY
);
