-- The embedded event store. SQLite has one writer at a time and ledgerdesk
-- opens every write transaction with BEGIN IMMEDIATE, so positions are handed
-- out in commit order: a reader at position > checkpoint never skips a late
-- commit. AUTOINCREMENT keeps a position from ever being reused.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    stream         TEXT    NOT NULL CHECK (stream <> ''),
    stream_version INTEGER NOT NULL CHECK (stream_version >= 1),
    type           TEXT    NOT NULL CHECK (type <> ''),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    payload        TEXT    NOT NULL, -- JSON as given
    metadata       TEXT    NOT NULL, -- JSON of eventstore.Metadata
    recorded_at    TEXT    NOT NULL, -- UTC, RFC 3339 with microseconds
    UNIQUE (stream, stream_version)
);

-- One row per durable subscriber: the position of the last event it
-- processed, written in the same transaction as the handler's writes.
CREATE TABLE subscription_checkpoints (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
) WITHOUT ROWID;
