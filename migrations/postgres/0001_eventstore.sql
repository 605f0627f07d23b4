-- The event store (eventstore/postgres).
--
-- Global order is (transaction_id, position), not position alone: a
-- position is taken at INSERT time but becomes visible at COMMIT, so
-- positions commit out of order. Readers only read rows whose transaction_id
-- is below pg_snapshot_xmin(pg_current_snapshot()) (narrowed to transactions
-- of this database): every transaction that could still add a row sorting
-- before them has ended. This is the ordering
-- of watermill-sql v4's default PostgreSQL schema, whose Subscriber reads this
-- table through the store's own SchemaAdapter.
CREATE TABLE events (
    position       bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id       text NOT NULL,
    stream         text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version > 0),
    event_type     text NOT NULL,
    schema_version integer NOT NULL CHECK (schema_version >= 1),
    -- json, not jsonb: the stored bytes come back exactly as appended.
    payload        json,
    correlation_id text NOT NULL DEFAULT '',
    causation_id   text NOT NULL DEFAULT '',
    actor          text NOT NULL DEFAULT '',
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- transaction_id first: readers range-scan it (watermill's layout).
    CONSTRAINT events_pkey PRIMARY KEY (transaction_id, position),
    -- cursors and Reached look events up by position.
    CONSTRAINT events_position_key UNIQUE (position),
    -- optimistic concurrency: a second writer of the same version fails.
    CONSTRAINT events_stream_version_key UNIQUE (stream, stream_version),
    -- callers derive ids deterministically so a re-delivered input is refused.
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- One row per durable subscriber (a watermill consumer group): the last
-- processed event as (last_processed_transaction_id, offset_acked), where
-- offset_acked is its position. The subscriber locks its row FOR UPDATE and
-- upserts it in the transaction that runs its handler. The layout is the
-- one watermill's DefaultPostgreSQLOffsetsAdapter expects.
CREATE TABLE subscription_offsets (
    consumer_group                varchar(255) NOT NULL,
    offset_acked                  bigint,
    last_processed_transaction_id xid8 NOT NULL,
    CONSTRAINT subscription_offsets_pkey PRIMARY KEY (consumer_group)
);
