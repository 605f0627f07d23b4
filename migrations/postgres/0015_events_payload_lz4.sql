-- Event payloads above about 2 KB (a MailReceived with its bodies) are
-- compressed when stored. PostgreSQL's default, pglz, cost the import more
-- than any other step of the intake's write path (issue 16); lz4 compresses
-- several times faster. Only rows written from now on use it; a server
-- built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: event payloads stay compressed with pglz';
END
$$;
