-- dcb_store schema, version 1: tables and indexes.
-- Applied by the Alembic revision 0001; see docs/consistency.md for why each piece exists.

CREATE SCHEMA IF NOT EXISTS dcb;

-- CACHE 1 is required: readers compute safe heads from the sequence's last_value,
-- which must be the value most recently handed out by any backend.
CREATE SEQUENCE dcb.events_position_seq AS bigint CACHE 1;

CREATE TABLE dcb.events (
    position    bigint      PRIMARY KEY DEFAULT nextval('dcb.events_position_seq'),
    type        text        NOT NULL CHECK (length(type) BETWEEN 1 AND 255),
    tags        text[]      NOT NULL DEFAULT '{}',
    data        jsonb       NOT NULL,
    metadata    jsonb,
    id          uuid        UNIQUE,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE dcb.events_position_seq OWNED BY dcb.events.position;

-- Tag queries (tags @> '{...}') use the GIN index; type-only queries the (type, position) index.
-- fastupdate off: with a pending list every tag lookup scans the unmerged entries linearly,
-- and an event store looks tags up on every conditional append.
CREATE INDEX events_tags_gin ON dcb.events USING gin (tags) WITH (fastupdate = off);
CREATE INDEX events_type_position ON dcb.events (type, position);

-- One row per lock key that a conditional or locking append wrote or conditioned on. Such appends bump the rows of their
-- keys; under REPEATABLE READ and SERIALIZABLE the bump fails with a serialization failure when
-- another transaction bumped the same key after this transaction's snapshot was taken, which is
-- how a decision made from a stale snapshot is caught (docs/consistency.md, "Snapshots").
-- Keyed by the key's name ('t:course:c1'), not its lock hash: two keys whose hashes collide
-- share a lock (they wait for each other) but never a clock (they never fail each other).
CREATE TABLE dcb.key_clocks (
    key     text   PRIMARY KEY,
    version bigint NOT NULL DEFAULT 1
);
