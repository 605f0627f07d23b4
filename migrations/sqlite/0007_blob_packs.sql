-- Where small mail blobs live inside pack files (adapters/blobstore): one
-- row per blob, written in the same transaction as the MailReceived or
-- MailFailed naming the ref. Large mails are loose files and have no row.
CREATE TABLE blob_packs (
    ref         TEXT   PRIMARY KEY,
    pack        TEXT   NOT NULL,
    pack_offset BIGINT NOT NULL,
    length      BIGINT NOT NULL
);
