-- PostgreSQL's 0017 adds the tables of the postgres blob store, which only
-- runs on PostgreSQL: this step only keeps the two dialects' versions in
-- step.
SELECT 1;
