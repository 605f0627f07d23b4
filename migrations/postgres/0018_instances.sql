-- Several serve processes on one database (README "Running several
-- instances"; package adapters/lease).
--
-- instances: every running serve process, its heartbeat renewed each
-- second; an instance whose heartbeat is older than the lease time is gone.
CREATE TABLE instances (
    id           TEXT        PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);

-- mailbox_leases: which instance may poll an inbound account. token grows
-- each time the lease changes hands: the fence that an import commit checks
-- (holder and token still ours, not expired) in its own transaction.
CREATE TABLE mailbox_leases (
    account_id TEXT        PRIMARY KEY,
    holder     TEXT        NOT NULL,
    token      BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- The outbound saga's claim: the instance sending the mail, and until when
-- the claim holds (unix milliseconds). Recovery makes a mail in "sending"
-- due again only when its owner is gone.
ALTER TABLE outbound_mails ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE outbound_mails ADD COLUMN claim_expires_at BIGINT NOT NULL DEFAULT 0;
-- Recovery finds the mails being sent without reading every mail ever sent.
CREATE INDEX outbound_mails_sending ON outbound_mails (claimed_by) WHERE state = 'sending';
