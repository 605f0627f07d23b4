package projections

import (
	"fmt"
	"strings"
)

// Dialects of the projection tables' DDL.
const (
	DialectPostgres = "postgres"
	DialectSQLite   = "sqlite"
)

// viewTables lists the tables of each rebuildable projection, by the
// projection's short name (the NAME of `ledgerdesk projections rebuild`).
var viewTables = map[string][]string{
	"tickets":   {"tickets"},
	"users":     {"users"},
	"locations": {"locations"},
}

// retiredTables are tables a view had in earlier releases, whose fresh
// copies an interrupted rebuild may have left behind (ticket_articles_g<N>
// before migration 0010): the next rebuild drops them with its own.
var retiredTables = map[string][]string{
	"tickets": {"ticket_articles"},
}

// ViewNames are the short names of the projections that can be rebuilt.
func ViewNames() []string { return []string{"tickets", "users", "locations"} }

// tableDDL returns the CREATE statements of the projection's tables for a
// dialect, each table named base+suffix and each index prefixed with it, so
// that a rebuild can create a fresh set beside the serving one. The serving
// set (suffix "") is created by migrations/*/0005_tickets.sql, with the
// collations of 0009_id_collation.sql and the removed columns of
// 0013_directory.sql (0010 turned ticket_articles into a
// view of the log); tests keep the two identical.
func tableDDL(dialect, view, suffix string) (string, error) {
	var ts, big, bool_, c string
	switch dialect {
	case DialectPostgres:
		ts, big, bool_, c = "TIMESTAMPTZ", "BIGINT", "BOOLEAN", ` COLLATE "C"`
	case DialectSQLite:
		// TIMESTAMP columns hold UTC text (Go's time.Time.String form),
		// which the driver reads back as time and which sorts in time order.
		ts, big, bool_ = "TIMESTAMP", "INTEGER", "BOOLEAN"
	default:
		return "", fmt.Errorf("projections: unknown dialect %q", dialect)
	}
	var tmpl string
	switch view {
	case "tickets":
		tmpl = ticketsDDL
	case "users":
		tmpl = usersDDL
	case "locations":
		tmpl = locationsDDL
	default:
		return "", fmt.Errorf("projections: unknown view %q (one of %s)", view, strings.Join(ViewNames(), ", "))
	}
	return strings.NewReplacer("{s}", suffix, "{ts}", ts, "{big}", big, "{bool}", bool_, "{c}", c).Replace(tmpl), nil
}

// The DDL templates: {s} is the table suffix, {ts}, {big} and {bool} the
// dialect's types, {c} the byte-order collation of identifiers and
// addresses (see migrations/postgres/0009_id_collation.sql; SQLite's BINARY
// is that already).
const ticketsDDL = `CREATE TABLE tickets{s} (
    id                TEXT{c}   PRIMARY KEY,
    number            {big}  NOT NULL,
    subject           TEXT   NOT NULL DEFAULT '',
    status            TEXT   NOT NULL DEFAULT '',
    requester_email   TEXT{c}   NOT NULL DEFAULT '',
    requester_name    TEXT   NOT NULL DEFAULT '',
    requester_user_id TEXT   NOT NULL DEFAULT '',
    location_id       TEXT   NOT NULL DEFAULT '',
    resource          TEXT   NOT NULL DEFAULT '',
    category          TEXT   NOT NULL DEFAULT '',
    priority          TEXT   NOT NULL DEFAULT '',
    account_id        TEXT   NOT NULL DEFAULT '',
    article_count     {big}  NOT NULL DEFAULT 0,
    created_at        {ts}   NOT NULL,
    updated_at        {ts}   NOT NULL,
    closed_at         {ts},
    version           {big}  NOT NULL
);
CREATE UNIQUE INDEX tickets{s}_number ON tickets{s} (number);
CREATE INDEX tickets{s}_status ON tickets{s} (status, number);
CREATE INDEX tickets{s}_requester ON tickets{s} (requester_email, number);
CREATE INDEX tickets{s}_resource ON tickets{s} (resource, number);
CREATE INDEX tickets{s}_category ON tickets{s} (category, number);
CREATE INDEX tickets{s}_priority ON tickets{s} (priority, number);
CREATE INDEX tickets{s}_created ON tickets{s} (created_at, number);
CREATE INDEX tickets{s}_updated ON tickets{s} (updated_at, number);
`

const usersDDL = `CREATE TABLE users{s} (
    id           TEXT{c}   PRIMARY KEY,
    user_name    TEXT   NOT NULL DEFAULT '',
    email        TEXT   NOT NULL DEFAULT '',
    name         TEXT   NOT NULL DEFAULT '',
    location_id  TEXT   NOT NULL DEFAULT '',
    auto_created {bool} NOT NULL DEFAULT FALSE,
    created_at   {ts}   NOT NULL,
    updated_at   {ts}   NOT NULL,
    version      {big}  NOT NULL,
    removed      {bool} NOT NULL DEFAULT FALSE
);
CREATE INDEX users{s}_user_name ON users{s} (user_name, id);
CREATE INDEX users{s}_email ON users{s} (email);
`

const locationsDDL = `CREATE TABLE locations{s} (
    id         TEXT{c}   PRIMARY KEY,
    name       TEXT   NOT NULL DEFAULT '',
    domain     TEXT   NOT NULL DEFAULT '',
    created_at {ts}   NOT NULL,
    version    {big}  NOT NULL,
    removed    {bool} NOT NULL DEFAULT FALSE
);
CREATE INDEX locations{s}_name ON locations{s} (name, id);
`

// generationsDDL is the control table of rebuilds (in 0005_tickets.sql).
const generationsDDL = `CREATE TABLE projection_generations (
    projection   TEXT    PRIMARY KEY,
    generation   INTEGER NOT NULL,
    subscriber   TEXT    NOT NULL,
    last_attempt INTEGER NOT NULL
);
`
