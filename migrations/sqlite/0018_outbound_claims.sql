-- The outbound saga's claim (see the PostgreSQL migration of the same
-- number): the embedded store has one instance, whose claims a restart
-- always finds gone.
ALTER TABLE outbound_mails ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE outbound_mails ADD COLUMN claim_expires_at BIGINT NOT NULL DEFAULT 0;
-- Recovery finds the mails being sent without reading every mail ever sent.
CREATE INDEX outbound_mails_sending ON outbound_mails (claimed_by) WHERE state = 'sending';
