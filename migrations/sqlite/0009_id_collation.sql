-- PostgreSQL's 0009 gives identifiers and e-mail addresses the byte order
-- of collation "C". SQLite compares TEXT that way (BINARY) already: this
-- step only keeps the two dialects' versions in step.
SELECT 1;
