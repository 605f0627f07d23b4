-- The ticket, user and location views (projections.Tickets, Users,
-- Locations). Written only by their projections, each in the same transaction
-- as its checkpoint; analysts may query them with plain SQL (README,
-- "Querying the views with SQL"). version is the last applied version of the
-- row's stream (ticket-<id>, user-<id>, location-<id>); an event at or below
-- it is a redelivery and changes nothing. `ledgerdesk projections rebuild`
-- builds a fresh copy of these tables (same DDL, a _g<N> suffix, see
-- projections/schema.go, which must stay identical) and swaps it in;
-- projection_generations names the subscriber that feeds the serving set.

CREATE TABLE tickets (
    id                TEXT   PRIMARY KEY,
    number            BIGINT  NOT NULL,
    subject           TEXT   NOT NULL DEFAULT '',
    status            TEXT   NOT NULL DEFAULT '',
    requester_email   TEXT   NOT NULL DEFAULT '',
    requester_name    TEXT   NOT NULL DEFAULT '',
    requester_user_id TEXT   NOT NULL DEFAULT '',
    location_id       TEXT   NOT NULL DEFAULT '',
    resource          TEXT   NOT NULL DEFAULT '',
    category          TEXT   NOT NULL DEFAULT '',
    priority          TEXT   NOT NULL DEFAULT '',
    account_id        TEXT   NOT NULL DEFAULT '',
    article_count     BIGINT  NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ   NOT NULL,
    updated_at        TIMESTAMPTZ   NOT NULL,
    closed_at         TIMESTAMPTZ,
    version           BIGINT  NOT NULL
);
CREATE UNIQUE INDEX tickets_number ON tickets (number);
CREATE INDEX tickets_status ON tickets (status, number);
CREATE INDEX tickets_requester ON tickets (requester_email, number);
CREATE INDEX tickets_resource ON tickets (resource, number);
CREATE INDEX tickets_category ON tickets (category, number);
CREATE INDEX tickets_priority ON tickets (priority, number);
CREATE INDEX tickets_created ON tickets (created_at, number);
CREATE INDEX tickets_updated ON tickets (updated_at, number);

CREATE TABLE ticket_articles (
    ticket_id  TEXT   NOT NULL,
    seq        BIGINT  NOT NULL,
    kind       TEXT   NOT NULL,
    mail_id    TEXT   NOT NULL DEFAULT '',
    message_id TEXT   NOT NULL DEFAULT '',
    from_addr  TEXT   NOT NULL DEFAULT '',
    to_addr    TEXT   NOT NULL DEFAULT '',
    subject    TEXT   NOT NULL DEFAULT '',
    text_body  TEXT   NOT NULL DEFAULT '',
    html_body  TEXT   NOT NULL DEFAULT '',
    blob_ref   TEXT   NOT NULL DEFAULT '',
    actor      TEXT   NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ   NOT NULL,
    PRIMARY KEY (ticket_id, seq)
);

CREATE TABLE users (
    id           TEXT   PRIMARY KEY,
    user_name    TEXT   NOT NULL DEFAULT '',
    email        TEXT   NOT NULL DEFAULT '',
    name         TEXT   NOT NULL DEFAULT '',
    location_id  TEXT   NOT NULL DEFAULT '',
    auto_created BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMPTZ   NOT NULL,
    updated_at   TIMESTAMPTZ   NOT NULL,
    version      BIGINT  NOT NULL
);
CREATE INDEX users_user_name ON users (user_name, id);
CREATE INDEX users_email ON users (email);

CREATE TABLE locations (
    id         TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL DEFAULT '',
    domain     TEXT   NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ   NOT NULL,
    version    BIGINT  NOT NULL
);
CREATE INDEX locations_name ON locations (name, id);

CREATE TABLE projection_generations (
    projection   TEXT    PRIMARY KEY,
    generation   INTEGER NOT NULL,
    subscriber   TEXT    NOT NULL,
    last_attempt INTEGER NOT NULL
);
