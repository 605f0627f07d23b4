-- PostgreSQL only (lz4 compression of event payloads); SQLite stores
-- payloads uncompressed. Kept so that both dialects count the same steps.
SELECT 1;
