-- Mail blobs kept in the database itself (LEDGERDESK_BLOB_STORE=postgres,
-- adapters/blobstore/pgstore), so that every instance on this database
-- reaches every mail. One row per blob, keyed by its ref ("sha256:<hex>");
-- the bytes in chunks of at most 1 MiB, so a large mail is streamed in and
-- out and never held whole. A chunk row is written under a placeholder
-- ref while the upload runs and renamed to the blob's ref in the same
-- transaction as its blobs row: a blob is complete or absent.
CREATE TABLE blobs (
    ref    TEXT    PRIMARY KEY,
    size   BIGINT  NOT NULL,
    chunks INTEGER NOT NULL
);

CREATE TABLE blob_chunks (
    ref  TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    data BYTEA   NOT NULL,
    PRIMARY KEY (ref, seq)
);
