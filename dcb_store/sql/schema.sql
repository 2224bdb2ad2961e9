-- dcb_store: the whole schema at head, in one file.
--
-- Revision: 0011_append_try_locks
--
-- This file is the truth about the current schema: read it, not the revisions, to learn what a
-- store's database holds and why. The Alembic revisions (dcb_store/alembic/versions, their SQL
-- in the v<N>_*.sql files beside this one) are the deltas that bring an existing database from
-- one revision to the next; they keep the history, this file the result. Both must agree:
-- tests/test_schema_file.py builds one database with the revisions and one from this file and
-- compares them object by object (tables, columns, constraints and whether they are validated,
-- indexes, sequences, every function's definition and settings, triggers, privileges,
-- comments). A new revision updates this file, and the "Revision:" line above, in the same
-- commit (CONTRIBUTING.md, "A new Alembic revision").
--
-- Loading. Stores are built by the migrations (dcb_store.migrations.upgrade, `dcb-store
-- upgrade`, `alembic upgrade head`), not from this file. It does load on its own, in one go, on
-- a database without a dcb schema: `psql --single-transaction -v ON_ERROR_STOP=1 -f
-- schema.sql`, or one execute() without parameters through psycopg (as the test does). It does
-- not write the migrations' version record (dcb.alembic_version, made by
-- dcb_store._impl.schema_guard): a database built from this file alone is refused by the
-- migrations ("holds objects but no dcb_store version record") rather than migrated on a guess.
-- To hand such a database to the migrations, stamp it with the revision named above, in the same
-- transaction (the test does exactly this, then runs migrations.upgrade, which has nothing to do):
--
--   CREATE TABLE dcb.alembic_version (version_num VARCHAR(32) NOT NULL,
--       CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
--   INSERT INTO dcb.alembic_version (version_num) VALUES ('0011_append_try_locks');
--
-- Conventions (CONTRIBUTING.md):
--   * every object is qualified with its schema (dcb., pg_catalog.); functions pin
--     search_path = pg_catalog, pg_temp, except those that run once per key, per row or per
--     condition and name nothing outside pg_catalog (lock_key_v1, lock_key_v2, tags_valid_v1,
--     events_analyzed_at_v1, cached_hot_tags_v1, which reads dcb.events' statistics only): a SET
--     clause costs a settings save/restore per call and stops PostgreSQL from inlining a SQL one;
--   * every function name carries a _vN suffix. A new signature or contract is the next _vN;
--     the previous one stays, as a wrapper of the new one where it can, because code of the
--     previous release keeps calling it while a rolling deploy runs. The older functions below
--     are marked "Superseded";
--   * PL/pgSQL rather than SQL for anything called on every append or read: PostgreSQL plans a
--     PL/pgSQL function's statements once per session, a SQL function with a SET clause on
--     every call. Most of them also SET plan_cache_mode = force_generic_plan: a custom plan per
--     call (re-planning every statement) cost more than it saved. The few lookups whose best
--     plan depends on the values (a common type, a hot tag) use EXECUTE instead;
--   * the statements inside the $$ bodies are exactly what the revisions installed: the test
--     compares them character for character, comments included.
--
-- Contents: the schema; lock keys; dcb.events and its limits; write traces; checkpoints; the
-- legacy key clocks; key names and lock keys; trust (which sessions are the store's); safe
-- heads; the snapshot probe and pruning; hot tags; appending; reading; following; erasure;
-- monitoring; privileges.

-- Pinned for this transaction, as the migrations pin it (dcb_store._impl.schema_guard): the
-- unqualified names of the column checks below resolve in pg_catalog, never in a schema another
-- role could write to. (Under psql without --single-transaction it lasts one statement only.)
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);


-- ============================================================================================
-- The schema
-- ============================================================================================

-- Owned by the role that migrates (the store's owner: it alone changes the schema and may
-- erase). Nobody else may create objects in it: the migrations refuse a dcb schema that grants
-- CREATE to another role. USAGE is granted per application role by dcb_store.roles.
CREATE SCHEMA dcb;
REVOKE ALL ON SCHEMA dcb FROM PUBLIC;


-- ============================================================================================
-- Lock keys
-- ============================================================================================
--
-- The store's advisory locks are 64-bit keys whose top byte names the library's lock space:
--   0xDC  a key lock: 't:<tag>', 'y:<event type>', 'a:' (all events), 'g:' (global),
--         'i:<event id>'; the low 56 bits are a hash of the key name (lock_key_v2);
--   0xDD  an in-flight marker: the low 56 bits are a position (the appends, in_flight_cap_v2);
--   0xDE  the notify key (notify_appended_v2): one notifier at a time;
--   0xDF  the pruner key (prune_traces_v2, prune_traces_v1): one pruner at a time; (0xDF, 2)
--         one writer of the shared hot-tag list at a time (refresh_hot_tags_v1).
-- They are taken with the two-int4 form of the advisory-lock functions (objsubid = 2 in
-- pg_locks), apart from the single-bigint space most applications use. Advisory locks have no
-- privileges: any role that can connect can take any key, which is why readers count only the
-- locks of the store's own sessions (see "Trust").


-- ============================================================================================
-- dcb.events: the history
-- ============================================================================================

-- CACHE 1 is required: readers compute safe heads from the sequence's last_value, which must be
-- the value most recently handed out by any backend.
CREATE SEQUENCE dcb.events_position_seq AS bigint CACHE 1;

-- One row per event, in position order. Positions come from the sequence at insert time, so
-- transactions commit out of position order: see "Safe heads". History is append-only (the
-- triggers under "Erasure"); writers insert only through the append functions (see
-- "Appending" and "Privileges").
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
-- fastupdate off: with a pending list every tag lookup scans the unmerged entries linearly, and
-- an event store looks tags up on every conditional append. A tag on a large share of the
-- events (a tenant's) is read by walking the primary key instead: see "Hot tags".
CREATE INDEX events_tags_gin ON dcb.events USING gin (tags) WITH (fastupdate = off);
CREATE INDEX events_type_position ON dcb.events (type, position);

-- --- What an event may hold (revision 0006) --------------------------------------------------
-- The table refuses what an Event cannot hold, also from writers that bypass Python
-- (dcb_store.limits documents the same limits, enforced when events are built).

-- Whether an event may be stored: true, or a check_violation naming the rule it breaks. Every
-- operator and function is schema-qualified and the type names are pg_catalog's: no
-- search_path can change what it runs, so it needs no SET clause (which would cost a settings
-- save and restore per row). Not STRICT: metadata is often NULL.
CREATE FUNCTION dcb.event_valid_v1(
    p_tags pg_catalog.text[],
    p_data pg_catalog.jsonb,
    p_metadata pg_catalog.jsonb
) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_tag pg_catalog.text;
    v_rule pg_catalog.text;
BEGIN
    IF pg_catalog.cardinality(p_tags) OPERATOR(pg_catalog.>) 100 THEN
        v_rule := 'at most 100 tags (MAX_TAGS_PER_EVENT)';
    ELSIF pg_catalog.array_ndims(p_tags) OPERATOR(pg_catalog.>) 1 THEN
        v_rule := 'tags are a flat list';
    ELSIF p_metadata IS NOT NULL
          AND pg_catalog.jsonb_typeof(p_metadata) OPERATOR(pg_catalog.<>) 'object' THEN
        v_rule := 'metadata is a JSON object or NULL';
    -- MAX_DATA_BYTES / MAX_METADATA_BYTES bound the compact JSON text; jsonb takes at most
    -- about 6 times as many bytes (an array of one-digit numbers), so these bounds on the
    -- stored size admit every value within the Python limits and refuse anything far beyond.
    ELSIF pg_catalog.pg_column_size(p_data) OPERATOR(pg_catalog.>) 8388608 THEN
        v_rule := 'data takes at most 8388608 bytes';
    ELSIF pg_catalog.pg_column_size(p_metadata) OPERATOR(pg_catalog.>) 524288 THEN
        v_rule := 'metadata takes at most 524288 bytes';
    -- MAX_JSON_DEPTH: no container at nesting level 64 (the root is level 0). The path stops
    -- descending at that level: about 0.1 us for a small document, 20-40 us for a 10 KB one.
    ELSIF pg_catalog.jsonb_path_exists(p_data,
              'strict $.**{64} ? (@.type() == "array" || @.type() == "object")') THEN
        v_rule := 'data nests at most 64 containers (MAX_JSON_DEPTH)';
    ELSIF pg_catalog.jsonb_path_exists(p_metadata,
              'strict $.**{64} ? (@.type() == "array" || @.type() == "object")') THEN
        v_rule := 'metadata nests at most 64 containers (MAX_JSON_DEPTH)';
    ELSE
        -- each tag: present, not empty, at most MAX_TAG_LENGTH characters, no 'lock:' prefix
        -- (an instruction to append, never stored)
        FOREACH v_tag IN ARRAY p_tags LOOP
            IF v_tag IS NULL OR v_tag OPERATOR(pg_catalog.=) '' THEN
                v_rule := 'tags are not NULL or empty';
            ELSIF pg_catalog.length(v_tag) OPERATOR(pg_catalog.>) 1024 THEN
                v_rule := 'a tag holds at most 1024 characters (MAX_TAG_LENGTH)';
            ELSIF pg_catalog.starts_with(v_tag, 'lock:') THEN
                v_rule := 'no stored tag starts with "lock:"';
            END IF;
            EXIT WHEN v_rule IS NOT NULL;
        END LOOP;
        IF v_rule IS NULL THEN
            RETURN true;
        END IF;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'check_violation', TABLE = 'events',
        CONSTRAINT = 'events_valid',
        MESSAGE = 'new row for relation "events" violates check constraint "events_valid"',
        DETAIL = v_rule;
END
$$;

-- Superseded by event_valid_v1 (revision 0009), kept for the downgrade, which restores the
-- checks of revision 0006 that call it. Tags of a stored event: no 'lock:' prefix (an instruction to append, never stored) and at
-- most 1024 characters each (MAX_TAG_LENGTH). Every operator and function is schema-qualified
-- and the type names are pg_catalog's: no search_path can change what it runs, so it needs no SET
-- clause. About 1 us per event of two tags.
CREATE FUNCTION dcb.tags_valid_v1(p_tags pg_catalog.text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
AS $$
DECLARE
    v_tag pg_catalog.text;
BEGIN
    FOREACH v_tag IN ARRAY p_tags LOOP
        IF pg_catalog.length(v_tag) OPERATOR(pg_catalog.>) 1024
           OR pg_catalog.starts_with(v_tag, 'lock:') THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- One CHECK for what revision 0006 checked in eight (revision 0009): PostgreSQL prepares each
-- CHECK expression again for every INSERT statement, about 45 us per append for the eight.
-- NOT VALID: rows stored before revision 0006 are not checked (readers report such a row as
-- UnreadableEventError with its position); every new or updated row is. An operator may check
-- the old rows later with ALTER TABLE dcb.events VALIDATE CONSTRAINT events_valid (it reads the
-- whole table, without blocking appends or reads).
-- Added by ALTER TABLE, not declared in CREATE TABLE: PostgreSQL marks a CHECK declared in
-- CREATE TABLE validated whatever it says, and a migrated store has it not validated (the test
-- compares pg_constraint.convalidated).
ALTER TABLE dcb.events
    ADD CONSTRAINT events_valid CHECK (dcb.event_valid_v1(tags, data, metadata)) NOT VALID;


-- ============================================================================================
-- Write traces: conditions that hold at every isolation level (revision 0006)
-- ============================================================================================
--
-- A condition is checked after the append's advisory locks. At READ COMMITTED that check is
-- exact: each statement takes a new snapshot. At REPEATABLE READ and SERIALIZABLE the
-- transaction's snapshot may predate a matching commit, so the store keeps WRITE TRACES and
-- PROBES them (docs/consistency.md, "Snapshots"):
--   * every append, plain or not, records one row per key it writes (each tag, its types,
--     "all") per transaction: (its transaction id, the key, the first position of the append).
--     Rows of different transactions never collide, so writers never wait for each other;
--   * a conditional append (or a read) under a transaction snapshot, after its locks and its
--     check, tries to insert the rows a writer it cannot see would have left: (x, key) for
--     every transaction x in flight at its snapshot that has committed since, and (key, p) for
--     every position p above the highest position its snapshot sees. A unique index that finds
--     a committed row invisible to the snapshot raises a serialization failure: that writer
--     wrote one of the condition's keys after the decision's snapshot. The probe rows are
--     always rolled back (check_snapshot_v1).

-- Who wrote which key, per transaction. A row is (writer's top-level transaction id, lock key
-- of a key name it wrote, first position of the append that first wrote it). Probe rows carry
-- NULL in one column so that exactly one unique index is probed by each.
CREATE TABLE dcb.append_traces (
    xid            xid8,
    key            bigint NOT NULL,
    first_position bigint,
    CONSTRAINT append_traces_by_xact UNIQUE (xid, key),
    CONSTRAINT append_traces_by_position UNIQUE (key, first_position)
);

-- Traces are needed only while a snapshot that cannot see them may still decide. Appends prune
-- rows of transactions far older than every running one (prune_traces_v1); this sequence
-- (non-transactional, so a decider reads its current value whatever its snapshot) holds the
-- xid below which rows may be gone. A decision whose snapshot is older refuses rather than
-- trust a pruned trace.
CREATE SEQUENCE dcb.trace_horizon_seq AS bigint MINVALUE 0 START 0 CACHE 1;


-- ============================================================================================
-- Checkpoints (revision 0003)
-- ============================================================================================

-- A projection runner's position, by runner name. The runner updates its row in the same
-- transaction as its read-model writes, so effects happen exactly once.
CREATE TABLE dcb.checkpoints (
    name       text        PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);


-- ============================================================================================
-- Key clocks (revisions 0001-0005; unused at head)
-- ============================================================================================

-- Superseded by the write traces (revision 0006). No function at head reads or writes it
-- (append_v1 and append_v2 are wrappers over append_v3 now); no revision dropped it
-- (docs/consistency.md: "kept for the old functions during a deploy"), and the downgrade of
-- revision 0006 brings back the append that writes it. It was: one row per lock key that a
-- conditional or locking append wrote or conditioned on, bumped by such appends, so that under
-- REPEATABLE READ and SERIALIZABLE the bump of a key bumped after the transaction's snapshot
-- failed with a serialization failure. Keyed by the key's name ('t:course:c1'), not its lock
-- hash: two keys whose hashes collide share a lock but never a clock. Revision 0006 stopped
-- using the clocks: they made an open conditional transaction hold up every unrelated decision
-- writing the same tag, and missed plain writers, type-only and match-all conditions.
CREATE TABLE dcb.key_clocks (
    key     text   PRIMARY KEY,
    version bigint NOT NULL DEFAULT 1
);


-- ============================================================================================
-- Key names and lock keys
-- ============================================================================================

-- The lock key of a key name: 't:<tag>', 'y:<event type>', 'a:' (all events), 'g:' (global),
-- 'i:<event id>' (revision 0006). The same values as lock_key_v1, so appends of either version
-- collide during a deploy; no settings consulted (v1's test-only hash-width knob is gone) and
-- every operator is schema-qualified, so the function needs no search_path and PostgreSQL can
-- inline it.
CREATE FUNCTION dcb.lock_key_v2(p_name text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (pg_catalog.hashtextextended(p_name, 1145258579)
            OPERATOR(pg_catalog.&) '72057594037927935'::bigint)
           OPERATOR(pg_catalog.|) '-2594073385365405696'::bigint
$$;

-- Superseded by lock_key_v2 (revision 0006); still called by query_keys_v1 and
-- in_flight_cap_v1. The test-only setting dcb.test_lock_hash_bits shrinks the hash to force
-- collisions. Deliberately without a SET clause: a SET clause stops PostgreSQL from inlining this
-- one-line function and costs a settings save/restore per key. It names nothing outside
-- pg_catalog, which PostgreSQL always searches first, so it needs no pinned search_path.
CREATE FUNCTION dcb.lock_key_v1(p_name text) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT (CASE
                WHEN coalesce(pg_catalog.current_setting('dcb.test_lock_hash_bits', true), '') = ''
                THEN pg_catalog.hashtextextended(p_name, 1145258579)
                ELSE pg_catalog.hashtextextended(p_name, 1145258579)
                     & ((1::bigint << pg_catalog.current_setting('dcb.test_lock_hash_bits')::int) - 1)
            END & 72057594037927935) | (-2594073385365405696)
$$;

-- The key names that stand for a query (a JSON array of items {"types": [...], "tags": [...]}):
-- any event that matches the query carries at least one of them among its write keys.
-- A tag item stands by its smallest tag (a matching event carries every tag of the item),
-- a type-only item by each of its types, an empty item by the "all" key.
CREATE FUNCTION dcb.query_key_names_v1(p_items jsonb) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
-- generic plans: a custom plan per call (re-planning every statement) cost more than it saved
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_names text[] := '{}';
    v_item jsonb;
BEGIN
    -- PL/pgSQL rather than SQL: its statements are planned once per session, not per call.
    FOR v_item IN SELECT it FROM jsonb_array_elements(coalesce(p_items, '[{}]')) it LOOP
        IF jsonb_array_length(coalesce(v_item->'tags', '[]')) > 0 THEN
            v_names := v_names || ('t:' || (SELECT min(t) FROM jsonb_array_elements_text(v_item->'tags') t));
        ELSIF jsonb_array_length(coalesce(v_item->'types', '[]')) > 0 THEN
            v_names := v_names || ARRAY(SELECT 'y:' || y FROM jsonb_array_elements_text(v_item->'types') y);
        ELSE
            v_names := v_names || 'a:'::text;
        END IF;
    END LOOP;
    RETURN v_names;
END
$$;

-- Superseded (revision 0006: read_v1 computes its keys with lock_key_v2): the lock keys of a
-- query, by lock_key_v1.
CREATE FUNCTION dcb.query_keys_v1(p_items jsonb) RETURNS bigint[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT DISTINCT dcb.lock_key_v1(n) FROM unnest(dcb.query_key_names_v1(p_items)) n)
$$;


-- ============================================================================================
-- Limits
-- ============================================================================================

-- Refuse a query (JSON array of items) beyond dcb_store.limits, for callers that bypass Python:
-- MAX_QUERY_ITEMS items, MAX_TYPES_PER_ITEM types and MAX_TAGS_PER_ITEM tags per item. Such a
-- request would otherwise cost seconds on a large store (one index scan per item and type).
-- (The batch size, MAX_BATCH_EVENTS, is append_v3's own check; an event's contents are the
-- table's checks above.)
CREATE FUNCTION dcb.check_items_v1(p_items jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_items IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(p_items) <> 'array' OR jsonb_array_length(p_items) > 100
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(p_items) it
                  WHERE jsonb_typeof(it) <> 'object'
                     OR jsonb_array_length(coalesce(it->'types', '[]')) > 100
                     OR jsonb_array_length(coalesce(it->'tags', '[]')) > 100) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'a query holds at most 100 items of at most 100 types and 100 tags each';
    END IF;
END
$$;


-- ============================================================================================
-- Trust: which sessions are the store's (revision 0006)
-- ============================================================================================

-- Is this role one of the store's own: may it append (EXECUTE on append_v3), directly, by
-- inheritance, or by SET ROLE to a role that may (membership without INHERIT)? Advisory locks
-- have no privileges: any role that can connect can take any key. Safe heads and followers
-- count only the locks of sessions whose LOGIN role is a store role, so a foreign role cannot
-- blind a read with a fake in-flight marker; the appends refuse a session whose login role is
-- not one (for instance an application's SECURITY DEFINER function called by an outside
-- role), so no genuine marker is ever ignored.
-- PL/pgSQL, not SQL: every append asks, and a SQL function with a SET clause is planned on
-- every call (it had cost plain appends a fifth of their throughput).
CREATE FUNCTION dcb.is_store_role_v1(p_role oid) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    c_append constant regprocedure := 'dcb.append_v3(jsonb, text[], jsonb, integer)';
BEGIN
    IF has_function_privilege(p_role, c_append, 'EXECUTE') THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1
                   FROM pg_proc f, aclexplode(f.proacl) a
                   WHERE f.oid = c_append
                     AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0
                     AND pg_has_role(p_role, a.grantee, 'MEMBER'));
END
$$;

-- Is this backend a session of the store's own roles (by its login role)?
CREATE FUNCTION dcb.is_store_session_v1(p_pid integer) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(bool_or(dcb.is_store_role_v1(a.usesysid)), false)
              FROM pg_stat_get_activity(p_pid) a);
END
$$;

-- The same for a lock holder as pg_locks shows it: a backend (pid), or a prepared transaction
-- (no pid; virtualtransaction '-1/<xid>'), whose owner must be a store role. A prepared
-- transaction keeps its in-flight marker until COMMIT PREPARED: ignoring it would let a read's
-- head pass its events.
CREATE FUNCTION dcb.is_store_holder_v1(p_pid integer, p_vxid text) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_pid IS NOT NULL THEN
        RETURN dcb.is_store_session_v1(p_pid);
    END IF;
    RETURN coalesce((SELECT bool_or(dcb.is_store_role_v1(r.oid))
                       FROM pg_prepared_xacts x JOIN pg_roles r ON r.rolname = x.owner
                      WHERE '-1/' || x.transaction::text = p_vxid), false);
END
$$;


-- ============================================================================================
-- Safe heads
-- ============================================================================================
--
-- Positions come from a sequence at insert time, so transactions commit out of position order:
-- when position 11 is visible, 10 may still be in flight. Every append holds an IN-FLIGHT
-- MARKER (lock space 0xDD) for a lower bound of the positions it takes, until its transaction
-- ends; a read reports as its head only a position below the markers of the writers of its
-- keys (docs/consistency.md, "Safe heads").

-- The in-flight cap for a read of the query whose keys are p_keys: the highest position that a
-- read whose snapshot is taken AFTER this call may report as its head. It is the last position
-- handed out so far, lowered below the in-flight marker of any other transaction that holds one
-- of the keys (or the global key exclusively). Every position at or below the cap was handed out
-- before this scan; its writer had then either committed (a later snapshot sees it) or held its
-- marker and keys (so the cap is below it). The caller must read in a later statement: at READ
-- COMMITTED each statement takes a new snapshot.
-- Version 2 (revision 0006) counts only the markers and keys of the store's own sessions (see
-- "Trust"), and of prepared transactions (their locks have no pid).
CREATE FUNCTION dcb.in_flight_cap_v2(p_keys bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_cap bigint;
    v_marker bigint;
    v_global constant bigint := dcb.lock_key_v2('g:');
BEGIN
    -- read the sequence first: positions handed out after this point are above the cap
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO v_cap FROM dcb.events_position_seq;
    -- holders by virtualtransaction: a prepared transaction's locks have no pid
    WITH held AS MATERIALIZED (
        SELECT l.pid, l.virtualtransaction AS holder,
               (l.classid::bigint << 32) | l.objid::bigint AS k, l.mode, l.granted
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.pid IS DISTINCT FROM pg_backend_pid()
          AND (l.classid::bigint >> 24) IN (220, 221)
    ), candidates AS MATERIALIZED (
        SELECT m.pid, m.holder, m.k & 72057594037927935 AS marker
        FROM held m
        WHERE (m.k >> 56) & 255 = 221
          AND EXISTS (SELECT 1 FROM held x
                      WHERE x.holder = m.holder AND x.granted
                        AND (x.k = ANY (p_keys) OR (x.k = v_global AND x.mode = 'ExclusiveLock')))
    )
    SELECT min(c.marker) INTO v_marker FROM candidates c
     WHERE dcb.is_store_holder_v1(c.pid, c.holder);
    IF v_marker IS NOT NULL AND v_marker - 1 < v_cap THEN
        v_cap := v_marker - 1;
    END IF;
    RETURN v_cap;
END
$$;

-- Superseded by in_flight_cap_v2 (revision 0006): the same contract, counting the markers of
-- every session (a foreign role could take a fake one). Kept for code of the previous release.
CREATE FUNCTION dcb.in_flight_cap_v1(p_keys bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
-- generic plans: a custom plan per call (re-planning every statement) cost more than it saved
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_cap bigint;
    v_marker bigint;
    v_global constant bigint := dcb.lock_key_v1('g:');
BEGIN
    -- read the sequence first: positions handed out after this point are above the cap
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO v_cap FROM dcb.events_position_seq;
    WITH held AS MATERIALIZED (
        SELECT l.pid, (l.classid::bigint << 32) | l.objid::bigint AS k, l.mode, l.granted
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.pid <> pg_backend_pid()
          AND (l.classid::bigint >> 24) IN (220, 221)
    )
    SELECT min(m.k & 72057594037927935) INTO v_marker
    FROM held m
    WHERE (m.k >> 56) & 255 = 221
      AND EXISTS (SELECT 1 FROM held x
                  WHERE x.pid = m.pid AND x.granted
                    AND (x.k = ANY (p_keys) OR (x.k = v_global AND x.mode = 'ExclusiveLock')));
    IF v_marker IS NOT NULL AND v_marker - 1 < v_cap THEN
        v_cap := v_marker - 1;
    END IF;
    RETURN v_cap;
END
$$;


-- ============================================================================================
-- The snapshot probe and pruning (revisions 0006, 0007; see "Write traces")
-- ============================================================================================

-- Refuse (serialization failure) when a writer invisible to this transaction's snapshot wrote
-- one of p_keys: the probe described under "Write traces". Cheap when nothing was committed since
-- the snapshot; bounded otherwise (a snapshot too far behind refuses instead of probing).
-- p_upto: probe positions up to this one (NULL: the last handed out, for appends; a read passes
-- its head: an unseen writer above the head hides nothing from it). Positions are probed from
-- the highest one the snapshot sees among OTHER transactions' rows: this transaction's own
-- appends (at or above its in-flight marker) may sit above writers it cannot see.
CREATE FUNCTION dcb.check_snapshot_v1(p_keys bigint[], p_upto bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    c_max_probes constant integer := 20000;
    v_snapshot pg_snapshot := pg_current_snapshot();
    v_xids xid8[];
    v_seen bigint := 0;
    v_last bigint := 0;
    v_keys bigint[] := p_keys || dcb.lock_key_v2('g:');
    v_own bigint;
    v_setting text := coalesce(current_setting('dcb.in_flight_marker', true), '');
    v_xmax bigint := pg_snapshot_xmax(v_snapshot)::text::bigint;
    v_next bigint;
BEGIN
    -- Transactions whose rows the snapshot cannot see and that have committed since: those in
    -- flight below its xmax (its xip list), and every one from xmax (the latest completed xid
    -- + 1 when it was taken, NOT the next xid: a transaction may have held a higher xid, and
    -- positions, while it was in flight) up to the newest xid now. age() measures from the next
    -- xid as first read in this transaction, after the snapshot was taken (or from our own xid,
    -- assigned after it; later xids took their positions after the snapshot: the position
    -- probe below covers them).
    v_next := v_xmax + age((v_xmax % 4294967296)::text::xid);
    IF v_next - v_xmax > c_max_probes THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'the transaction''s snapshot is too far behind to decide on it',
            DETAIL = format('%s transactions began since the snapshot', v_next - v_xmax);
    END IF;
    v_xids := ARRAY(SELECT x FROM pg_snapshot_xip(v_snapshot) x
                    WHERE pg_xact_status(x) = 'committed'
                    UNION ALL
                    SELECT g::text::xid8 FROM generate_series(v_xmax, v_next - 1) g
                    WHERE pg_xact_status(g::text::xid8) = 'committed');
    -- the highest position of another transaction that the snapshot sees: below our own marker
    -- (every position visible to us from others was handed out before our snapshot, hence
    -- before our marker) once this transaction has appended
    -- (since revision 0009: the lesser of the lowest marker this transaction holds, which every
    -- append of it takes and none can release, and the marker setting, which the session may
    -- set to anything: a setting forged above its own events made its own decisions skip the
    -- probe of the positions between them; a lower bound only probes more. The held markers
    -- come from pg_locks, not from the trace rows: a read of dcb.append_traces would take
    -- SERIALIZABLE predicate locks that concurrent appends conflict with)
    -- (a transaction without an id has not appended and holds no marker: a read in a
    -- transaction that wrote nothing skips the scan)
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        SELECT min(((l.classid::bigint << 32) | l.objid::bigint) & 72057594037927935) INTO v_own
          FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.pid = pg_backend_pid()
           AND l.granted AND (l.classid::bigint >> 24) = 221
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
    END IF;
    IF split_part(v_setting, ':', 1) = coalesce(pg_current_xact_id_if_assigned()::text, '-')
       AND split_part(v_setting, ':', 2) ~ '^[0-9]{1,17}$' THEN
        v_own := least(v_own, split_part(v_setting, ':', 2)::bigint);
    END IF;
    IF v_own IS NOT NULL THEN
        SELECT coalesce(max(e.position), 0) INTO v_seen FROM dcb.events e
         WHERE e.position < v_own;
    ELSE
        SELECT coalesce(max(e.position), 0) INTO v_seen FROM dcb.events e;
    END IF;
    IF p_upto IS NULL THEN
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO v_last
          FROM dcb.events_position_seq;
    ELSE
        v_last := p_upto;
    END IF;
    IF cardinality(v_xids) > 0 OR v_last > v_seen THEN
        IF (cardinality(v_xids) + greatest(v_last - v_seen, 0)) * cardinality(v_keys) > c_max_probes THEN
            RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                MESSAGE = 'the transaction''s snapshot is too far behind to decide on it',
                DETAIL = format('%s positions appended since the snapshot', v_last - v_seen);
        END IF;
        BEGIN
            INSERT INTO dcb.append_traces (xid, key, first_position)
            SELECT x, k, NULL FROM unnest(v_xids) x, unnest(v_keys) k
            UNION ALL
            SELECT NULL, k, p FROM generate_series(v_seen + 1, v_last) p, unnest(v_keys) k
            ON CONFLICT DO NOTHING;
            -- the probe rows must not stay: roll them back (a conflict raised 40001 instead)
            RAISE EXCEPTION USING ERRCODE = 'DCB0P';
        EXCEPTION
            WHEN SQLSTATE 'DCB0P' THEN NULL;
            WHEN read_only_sql_transaction THEN
                RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                    MESSAGE = 'a read-only transaction cannot prove its snapshot complete',
                    DETAIL = 'transactions in flight at its snapshot have committed since';
        END;
    END IF;
    -- after the probe: rows the probe relied on may have been pruned if the horizon passed us
    IF coalesce(pg_sequence_last_value('dcb.trace_horizon_seq'), 0)
       > pg_snapshot_xmin(v_snapshot)::text::bigint THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'the transaction''s snapshot is older than the write traces kept';
    END IF;
END
$$;

-- Forget traces of transactions so old that no snapshot that may still decide misses them:
-- the horizon moves first (deciders compare their snapshot with it after probing), then rows go.
-- One pruner at a time (the try-lock, held to the end of the transaction), so rows are deleted
-- directly: locking each first (v1's FOR UPDATE SKIP LOCKED) doubled the cost of a prune.
-- append_v4 and append_v5 call it once every 1,024 positions. Revision 0007.
CREATE FUNCTION dcb.prune_traces_v2() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- transactions older than the oldest running one by this margin: a decision whose snapshot
    -- is that old refuses (check_snapshot_v1); the margin keeps that to long transactions
    c_margin constant bigint := 100000;
    v_horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint - c_margin;
BEGIN
    -- one pruner at a time (0xDF, tried without waiting, held to the end of the transaction):
    -- two interleaved read-compare-sets could move the horizon backwards
    IF NOT pg_try_advisory_xact_lock(-553648128, 1) THEN
        RETURN;
    END IF;
    IF v_horizon > coalesce(pg_sequence_last_value('dcb.trace_horizon_seq'), 0) THEN
        PERFORM setval('dcb.trace_horizon_seq', v_horizon);
        BEGIN
            DELETE FROM dcb.append_traces t WHERE t.xid < v_horizon::text::xid8;
        EXCEPTION WHEN serialization_failure THEN
            NULL;  -- under a transaction snapshot, rows a pruner removed since: leave the rest
        END;
    END IF;
END
$$;

-- Superseded by prune_traces_v2 (revision 0007); append_v3 still calls it. The same rule; it
-- locks the rows it deletes (FOR UPDATE SKIP LOCKED).
CREATE FUNCTION dcb.prune_traces_v1() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- transactions older than the oldest running one by this margin: a decision whose snapshot
    -- is that old refuses (check_snapshot_v1); the margin keeps that to long transactions
    c_margin constant bigint := 100000;
    v_horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint - c_margin;
BEGIN
    -- one pruner at a time (0xDF, tried without waiting, held to the end of the transaction):
    -- two interleaved read-compare-sets could move the horizon backwards
    IF NOT pg_try_advisory_xact_lock(-553648128, 1) THEN
        RETURN;
    END IF;
    IF v_horizon > coalesce(pg_sequence_last_value('dcb.trace_horizon_seq'), 0) THEN
        PERFORM setval('dcb.trace_horizon_seq', v_horizon);
        BEGIN
            DELETE FROM dcb.append_traces t
             WHERE t.ctid = ANY (ARRAY(SELECT o.ctid FROM dcb.append_traces o
                                        WHERE o.xid < v_horizon::text::xid8
                                        FOR UPDATE SKIP LOCKED));
        EXCEPTION WHEN serialization_failure THEN
            NULL;  -- under a transaction snapshot, rows another pruner removed: leave the rest
        END;
    END IF;
END
$$;


-- ============================================================================================
-- Hot tags (revisions 0006 and 0008)
-- ============================================================================================

-- The store's hot tags as computed from the statistics of dcb.events.tags that ANALYZE (or
-- autovacuum) made at analyzed_at. Only the store's functions read and write it (no privilege
-- is granted on it).
CREATE TABLE dcb.hot_tags (
    id          integer PRIMARY KEY CHECK (id = 1),
    analyzed_at timestamptz NOT NULL,
    tags        text[] NOT NULL
);

-- When dcb.events was last analyzed, by hand or by autovacuum (NULL: never, since a statistics
-- reset, or on a standby, whose cumulative statistics are its own). PL/pgSQL, as the next one:
-- a SQL function with a SET clause is planned again in every transaction (the pg_stats query
-- below cost about 0.4 ms so, more than the lookup it saves). Deliberately without a SET
-- clause (switching settings cost 1.3 us of its 1.6 us, on every tags_are_hot_v1 call): it
-- names nothing outside pg_catalog, and only the store's functions, which pin search_path,
-- may call it.
CREATE FUNCTION dcb.events_analyzed_at_v1() RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN greatest(pg_catalog.pg_stat_get_last_analyze_time('dcb.events'::pg_catalog.regclass),
                    pg_catalog.pg_stat_get_last_autoanalyze_time('dcb.events'::pg_catalog.regclass));
END
$$;

-- The tags on at least 5% of the events, by pg_stats: about 0.3 ms with 1,000 most common
-- elements (the cast and filter of all of them), so the list is shared and cached.
CREATE FUNCTION dcb.hot_tags_from_statistics_v1() RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(m.e), '{}')
              FROM pg_stats s,
                   unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS m(e, f)
             WHERE s.schemaname = 'dcb' AND s.tablename = 'events' AND s.attname = 'tags'
               AND m.f >= 0.05 AND m.e IS NOT NULL);
END
$$;

-- The hot-tag list of the session's cache p_cached (the setting dcb.hot_tags, written by
-- tags_are_hot_v1: "<epoch checked>|<key>|<tags joined by U+001F>"), if it holds: its key is
-- the time dcb.events was last analyzed (in microseconds), or, never analyzed (no key), it
-- was checked less than a minute before p_now. NULL when it does not hold, for any value a
-- session may set (a regular expression before the cast; a forged list changes plans only).
-- SQL without a SET clause, so that it is inlined (a SET clause, or more than one statement,
-- would make it a call): it names nothing outside pg_catalog but dcb.events, and only the
-- store's functions, which pin search_path, call it.
CREATE FUNCTION dcb.cached_hot_tags_v1(p_cached text, p_now bigint) RETURNS text[]
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN pg_catalog.strpos(p_cached, '|') OPERATOR(pg_catalog.>) 0
         AND pg_catalog.split_part(p_cached, '|', 1) OPERATOR(pg_catalog.~) '^[0-9]{1,15}$'
         AND pg_catalog.split_part(p_cached, '|', 2) OPERATOR(pg_catalog.=) coalesce(
                 (extract(epoch FROM greatest(
                      pg_catalog.pg_stat_get_last_analyze_time('dcb.events'::pg_catalog.regclass),
                      pg_catalog.pg_stat_get_last_autoanalyze_time('dcb.events'::pg_catalog.regclass)))
                  OPERATOR(pg_catalog.*) 1000000)::bigint::pg_catalog.text, '')
        THEN CASE
            WHEN pg_catalog.split_part(p_cached, '|', 2) OPERATOR(pg_catalog.<>) ''
              OR pg_catalog.split_part(p_cached, '|', 1)::bigint
                 OPERATOR(pg_catalog.>=) (p_now OPERATOR(pg_catalog.-) 60)
            -- the tags: what follows the second '|' (or, without one, the rest after the first)
            THEN pg_catalog.string_to_array(
                     pg_catalog.substr(
                         pg_catalog.substr(p_cached, pg_catalog.strpos(p_cached, '|') OPERATOR(pg_catalog.+) 1),
                         pg_catalog.strpos(
                             pg_catalog.substr(p_cached, pg_catalog.strpos(p_cached, '|') OPERATOR(pg_catalog.+) 1),
                             '|') OPERATOR(pg_catalog.+) 1),
                     pg_catalog.chr(31))
            END
        END
$$;

-- Are all these tags hot: on at least 5% of the events, by the table's statistics (the most
-- common elements of dcb.events.tags)? A lookup of hot tags walks the primary key from `after`
-- (a page needs a few hundred rows); any other goes through the tag (GIN) index, which finds a
-- rare tag's rows at once but a hot tag's only all together, unordered. The answer changes
-- plans, never results: a session that sets dcb.hot_tags itself changes only its own plans.
-- Revision 0006; the shared row, revision 0008 (a setting changed in a transaction that rolls
-- back is rolled back too, so sessions whose transactions roll back read pg_stats every time).
-- The list is the one of the current statistics (the time dcb.events was last analyzed is
-- its key): the session setting if it holds that key, else the shared row if it does, else
-- pg_stats. Without a key (never analyzed, statistics reset, a standby, whose statistics
-- timestamps are its own) the session setting is trusted for a minute. Readers never write
-- (their transactions may be read-only, on a standby, or under a snapshot): appends do
-- (refresh_hot_tags_v1). The setting is "<epoch checked>|<key>|<tags joined by U+001F>",
-- parsed so that no value a session may set makes it fail (a regular expression, then
-- string_to_array): any other value counts as unset, and a forged list changes plans only.
-- Since revision 0011 it reads its cache through cached_hot_tags_v1 (above), as append_v5 does.
CREATE FUNCTION dcb.tags_are_hot_v1(p_tags text[]) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cached text := coalesce(current_setting('dcb.hot_tags', true), '');
    v_now bigint := extract(epoch FROM clock_timestamp())::bigint;
    v_hot text[] := dcb.cached_hot_tags_v1(v_cached, v_now);
    v_analyzed timestamptz;
    v_row_analyzed timestamptz;
BEGIN
    IF v_hot IS NULL THEN
        v_analyzed := dcb.events_analyzed_at_v1();
        SELECT h.analyzed_at, h.tags INTO v_row_analyzed, v_hot FROM dcb.hot_tags h WHERE h.id = 1;
        IF v_analyzed IS NULL OR v_row_analyzed IS DISTINCT FROM v_analyzed THEN
            v_hot := dcb.hot_tags_from_statistics_v1();
        END IF;
        PERFORM set_config('dcb.hot_tags',
                           v_now || '|' || coalesce((extract(epoch FROM v_analyzed) * 1000000)::bigint::text, '')
                           || '|' || array_to_string(v_hot, chr(31)), false);
    END IF;
    RETURN cardinality(p_tags) > 0 AND p_tags <@ v_hot;
END
$$;

-- Called by append_v5 when its session last called it over a minute ago (an append usually
-- commits, so what it writes is kept; a read usually rolls back). Computes the list again if
-- the shared row is missing or from older statistics, and writes it back only at READ
-- COMMITTED (a write under a transaction snapshot could make the caller's transaction fail to
-- serialize), by one session at a time (0xDF, 2, tried without waiting), and without waiting
-- for a lock on the row (a 1 ms lock timeout, in a subtransaction: whoever holds the row, or
-- the table, only leaves the row older). The caller's lock_timeout is kept.
CREATE FUNCTION dcb.refresh_hot_tags_v1() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now bigint := extract(epoch FROM clock_timestamp())::bigint;
    v_analyzed timestamptz := dcb.events_analyzed_at_v1();
    v_row_analyzed timestamptz;
    v_hot text[];
    v_old_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('dcb.hot_tags_refreshed', v_now::text, false);
    IF v_analyzed IS NULL OR current_setting('transaction_isolation') <> 'read committed'
       OR NOT pg_try_advisory_xact_lock(-553648128, 2) THEN
        RETURN;
    END IF;
    BEGIN
        PERFORM set_config('lock_timeout', '1ms', true);
        SELECT h.analyzed_at INTO v_row_analyzed FROM dcb.hot_tags h WHERE h.id = 1;
        IF v_row_analyzed IS DISTINCT FROM v_analyzed THEN
            v_hot := dcb.hot_tags_from_statistics_v1();
            INSERT INTO dcb.hot_tags AS h (id, analyzed_at, tags) VALUES (1, v_analyzed, v_hot)
            ON CONFLICT (id) DO UPDATE SET analyzed_at = excluded.analyzed_at, tags = excluded.tags;
        END IF;
        PERFORM set_config('lock_timeout', v_old_timeout, true);
    EXCEPTION WHEN lock_not_available THEN
        NULL;  -- the subtransaction's rollback restored lock_timeout
    END;
END
$$;


-- ============================================================================================
-- Appending
-- ============================================================================================

-- Insert a batch (append_v3's p_events; append_v4 and append_v5 insert one event in their own body), in order; its first and last positions. PL/pgSQL, not
-- SQL: PostgreSQL plans a SQL function's statement on every call, a PL/pgSQL one once per
-- session (that difference cost plain appends a third of their throughput).
CREATE FUNCTION dcb.insert_events_v1(p_events jsonb)
RETURNS TABLE (first_position bigint, last_position bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    WITH ins AS (
        INSERT INTO dcb.events (type, tags, data, metadata, id)
        SELECT x.e->>'type',
               ARRAY(SELECT jsonb_array_elements_text(x.e->'tags')),
               x.e->'data',
               nullif(x.e->'metadata', 'null'::jsonb),
               (x.e->>'id')::uuid
        FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, n)
        ORDER BY x.n
        RETURNING dcb.events.position
    )
    SELECT min(ins.position), max(ins.position) FROM ins;
END
$$;

-- Append a batch, in one round trip: take the advisory locks, check the condition, probe the
-- snapshot, insert, record the write traces. Version 5 of the append (revision 0008): the
-- protocol of version 4 (below) with fewer executor starts. Profiled inside the server, most of
-- append_v4's time went to starting statements (each statement of a PL/pgSQL function builds
-- a new executor per call), not to their work. append_v5 reads the event's and the condition
-- item's tags and types in one statement, plans and takes the advisory locks in one statement
-- sorted once, asks whether the condition's tags are hot once, and inserts the event with its
-- write traces in one statement; more than 256 key names plan and lock, and a batch inserts, as
-- append_v4 does. Locks,
-- markers, traces, the probe and the outcomes are those of append_v4 and append_v3: appends of
-- all three versions serialize with each other during a deploy (same keys, same modes).
-- Since revision 0009 (the same protocol): the in-flight marker reads the sequence through
-- pg_sequence_last_value and takes its lock in expressions, and every append takes the marker
-- lock, whatever the session setting dcb.in_flight_marker says.
-- Since revision 0011 (the same protocol): an append of one event without an id or lock: tags
-- tries its locks one by one, none waiting (so their order cannot deadlock), and takes the
-- sorted plan only when one of them is not free; it reads the session's cached hot-tag list
-- inline (cached_hot_tags_v1) and calls tags_are_hot_v1 only when that cache does not hold.
-- Arguments, outcomes and SECURITY DEFINER: as append_v4 (below).
CREATE FUNCTION dcb.append_v5(
    p_events jsonb,
    p_locks text[],
    p_condition jsonb,
    p_lock_timeout_ms integer,
    OUT outcome text,
    OUT last_position bigint,
    OUT conflict_position bigint,
    OUT lock_wait_ms double precision,
    OUT detail text
)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    c_max_keys constant integer := 256;
    c_max_events constant integer := 20000;  -- MAX_BATCH_EVENTS
    v_participant boolean := p_condition IS NOT NULL OR cardinality(p_locks) > 0;
    v_after bigint := coalesce((p_condition->>'after')::bigint, 0);
    v_one_event boolean;
    v_has_ids boolean;
    v_cond_names text[] := '{}';
    v_write_names text[];
    v_event_tags text[];
    v_items jsonb;
    v_one_item boolean := false;
    v_hot boolean;
    v_i integer;
    v_ids uuid[];
    v_stored uuid[];
    v_keys bigint[];
    v_excl boolean[];
    v_names text[];
    v_trace_keys bigint[];
    v_old_timeout text;
    v_conflict bigint;
    v_pos bigint;
    v_tags text[];
    v_types text[];
    v_first bigint;
    v_xid xid8;
    v_lock_started timestamptz;
    v_refreshed text;
    v_setting text;
    v_held bigint;
    v_marker bigint;
    v_void text;
    v_name text;
    v_key bigint;
    v_cond_keys bigint[];
    v_locked boolean := false;
    v_cached text;
    v_now bigint;
BEGIN
    lock_wait_ms := 0;
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'append needs a non-empty JSON array of events';
    END IF;
    IF jsonb_array_length(p_events) > c_max_events THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('a batch holds at most %s events', c_max_events);
    END IF;
    -- readers trust in-flight markers by the session's login role (is_store_role_v1): a marker
    -- they would ignore must not exist, so such a session may not append. The direct privilege
    -- answers at once for the usual login role (a simple expression, no executor); membership
    -- is looked up only when it does not.
    IF NOT has_function_privilege(session_user, 'dcb.append_v3(jsonb, text[], jsonb, integer)'::regprocedure, 'EXECUTE') THEN
        IF NOT dcb.is_store_role_v1((SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user)) THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('role %s may not append: its sessions are not the store''s', session_user),
                HINT = 'append from a session whose login role is (a member of) a store writer role';
        END IF;
    END IF;
    v_one_event := jsonb_array_length(p_events) = 1;
    IF p_condition IS NOT NULL THEN
        v_items := coalesce(p_condition->'items', '[{}]');
        v_one_item := jsonb_typeof(v_items) = 'array' AND jsonb_array_length(v_items) = 1
                      AND jsonb_typeof(v_items->0) = 'object';
    END IF;
    IF v_one_item THEN
        -- one item, the usual condition: its tags and types (and the one event's tags) once,
        -- for its key, its check and the insert
        SELECT ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->0->'tags', '[]'))),
               ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->0->'types', '[]'))),
               -- (not an array: read below, where append_v4 reads it, for append_v4's error)
               CASE WHEN v_one_event AND jsonb_typeof(p_events->0->'tags') = 'array'
                    THEN ARRAY(SELECT jsonb_array_elements_text(p_events->0->'tags')) END
          INTO v_tags, v_types, v_event_tags;
        IF cardinality(v_tags) > 100 OR cardinality(v_types) > 100
           OR array_position(v_tags, NULL) IS NOT NULL
           OR array_position(v_types, NULL) IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'a query holds at most 100 items of at most 100 types and 100 tags each, none of them null';
        END IF;
        -- the item's key: its least tag (all its tags must match), else each of its types
        -- (any may match), else "all"
        IF cardinality(v_tags) = 1 THEN
            v_cond_names := ARRAY['t:' || v_tags[1]];
        ELSIF cardinality(v_tags) > 1 THEN
            v_cond_names := ARRAY(SELECT 't:' || min(t) FROM unnest(v_tags) t);
        ELSIF cardinality(v_types) > 0 THEN
            v_cond_names := ARRAY(SELECT 'y:' || y FROM unnest(v_types) y);
        ELSE
            v_cond_names := '{a:}';
        END IF;
    ELSIF p_condition IS NOT NULL THEN
        -- check_items_v1 and query_key_names_v1, inlined (each call switches settings)
        IF jsonb_typeof(v_items) <> 'array' OR jsonb_array_length(v_items) > 100
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_items) it
                      WHERE jsonb_typeof(it) <> 'object'
                         OR jsonb_array_length(coalesce(it->'types', '[]')) > 100
                         OR jsonb_array_length(coalesce(it->'tags', '[]')) > 100
                         OR jsonb_path_exists(it, '$.tags[*] ? (@ == null)')
                         OR jsonb_path_exists(it, '$.types[*] ? (@ == null)')) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'a query holds at most 100 items of at most 100 types and 100 tags each, none of them null';
        END IF;
        -- each item's key, as above
        v_cond_names := ARRAY(
            SELECT n
              FROM jsonb_array_elements(v_items) it,
                   LATERAL (SELECT 't:' || min(t) FROM jsonb_array_elements_text(it->'tags') t
                             WHERE jsonb_array_length(coalesce(it->'tags', '[]')) > 0
                            UNION ALL
                            SELECT 'y:' || y FROM jsonb_array_elements_text(it->'types') y
                             WHERE jsonb_array_length(coalesce(it->'tags', '[]')) = 0
                            UNION ALL
                            SELECT 'a:'
                             WHERE jsonb_array_length(coalesce(it->'tags', '[]')) = 0
                               AND jsonb_array_length(coalesce(it->'types', '[]')) = 0) k(n)
             WHERE n IS NOT NULL);
    END IF;
    -- any id that is not JSON null, as append_v3's "->> 'id' IS NOT NULL" (strict: lax mode
    -- would unwrap "id": [] to nothing; here it is an id, and fails its uuid cast below)
    v_has_ids := jsonb_path_exists(p_events, 'strict $[*] ? (@.id.type() != "null")');
    IF v_has_ids THEN
        v_ids := ARRAY(SELECT (x->>'id')::uuid
                         FROM jsonb_array_elements(p_events) WITH ORDINALITY AS a(x, n)
                        WHERE x->>'id' IS NOT NULL ORDER BY n);
    END IF;
    -- what the events write: their tags, their types and "all"
    IF v_one_event THEN
        IF v_event_tags IS NULL THEN
            v_event_tags := ARRAY(SELECT jsonb_array_elements_text(p_events->0->'tags'));
        END IF;
        v_write_names := ARRAY['y:' || (p_events->0->>'type'), 'a:'];
    ELSE
        v_write_names := ARRAY(SELECT 't:' || t
                                 FROM jsonb_array_elements(p_events) e,
                                      jsonb_array_elements_text(e->'tags') t
                               UNION SELECT 'y:' || (e->>'type') FROM jsonb_array_elements(p_events) e)
                         || '{a:}'::text[];
        v_event_tags := '{}';
    END IF;

    BEGIN  -- a subtransaction: a failed append releases the locks it took
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- restored below; on an error the subtransaction's rollback restores it
            v_old_timeout := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
        END IF;
        v_lock_started := clock_timestamp();
        IF v_one_event AND NOT v_has_ids AND coalesce(cardinality(p_locks), 0) = 0
           AND cardinality(v_event_tags) + cardinality(v_cond_names) <= 64 THEN
            -- The usual append: its locks tried one by one, none waiting (so in any order);
            -- the first that is not free undoes all (this block's rollback), and the sorted
            -- plan below takes them, waiting. The same keys and modes as the plan: a key the
            -- condition takes exclusive is not also taken shared, and is traced if written.
            BEGIN
                v_cond_keys := '{}';
                FOREACH v_name IN ARRAY v_cond_names LOOP
                    v_key := dcb.lock_key_v2(v_name);
                    IF NOT pg_try_advisory_xact_lock((v_key >> 32)::bit(32)::int, v_key::bit(32)::int) THEN
                        RAISE EXCEPTION USING ERRCODE = 'DCB0L';
                    END IF;
                    v_cond_keys := v_cond_keys || v_key;
                END LOOP;
                v_trace_keys := '{}';
                FOR v_i IN 1 .. cardinality(v_event_tags) + cardinality(v_write_names) LOOP
                    v_key := dcb.lock_key_v2(CASE WHEN v_i <= cardinality(v_event_tags)
                                                  THEN 't:' || v_event_tags[v_i]
                                                  ELSE v_write_names[v_i - cardinality(v_event_tags)] END);
                    v_trace_keys := v_trace_keys || v_key;
                    CONTINUE WHEN v_key = ANY (v_cond_keys);
                    IF NOT pg_try_advisory_xact_lock_shared((v_key >> 32)::bit(32)::int, v_key::bit(32)::int) THEN
                        RAISE EXCEPTION USING ERRCODE = 'DCB0L';
                    END IF;
                END LOOP;
                IF v_participant THEN
                    v_key := dcb.lock_key_v2('g:');
                    IF NOT v_key = ANY (v_cond_keys)
                       AND NOT pg_try_advisory_xact_lock_shared((v_key >> 32)::bit(32)::int, v_key::bit(32)::int) THEN
                        RAISE EXCEPTION USING ERRCODE = 'DCB0L';
                    END IF;
                END IF;
                v_locked := true;
            EXCEPTION WHEN SQLSTATE 'DCB0L' THEN
                NULL;  -- a key is taken: the sorted plan below
            END;
        END IF;
        IF v_locked THEN
            NULL;  -- (the lock-timeout handler below plans the keys again if it needs them)
        ELSIF cardinality(v_event_tags) + cardinality(v_write_names) + cardinality(v_cond_names)
           + coalesce(cardinality(p_locks), 0) + coalesce(cardinality(v_ids), 0) + 1 <= c_max_keys THEN
            -- The lock plan, the trace keys and the locks in one statement, in one global key
            -- order (no deadlock between appends): exclusive for what the condition reads,
            -- for lock: tags and for event ids, shared for what the events write, plus the
            -- global key shared for a conditional or locking append. The aggregates take the
            -- rows in the sorted subquery's order, so the locks are taken in key order. Trace
            -- keys: the keys of what the events write. At most 256 names: at most 256 keys.
            SELECT array_agg(s.k), array_agg(s.x), array_agg(s.n), array_agg(s.k) FILTER (WHERE s.w),
                   count(CASE WHEN s.x
                              THEN pg_advisory_xact_lock((s.k >> 32)::bit(32)::int, s.k::bit(32)::int)::text
                              ELSE pg_advisory_xact_lock_shared((s.k >> 32)::bit(32)::int, s.k::bit(32)::int)::text END)
              INTO v_keys, v_excl, v_names, v_trace_keys, v_i
              FROM (SELECT dcb.lock_key_v2(w.n) AS k, bool_or(w.x) AS x, min(w.n) AS n, bool_or(w.w) AS w
                      FROM (SELECT 't:' || t AS n, false AS x, true AS w FROM unnest(v_event_tags) t
                            UNION ALL SELECT c, false, true FROM unnest(v_write_names) c
                            UNION ALL SELECT 'g:', false, false WHERE v_participant
                            UNION ALL SELECT c, true, false FROM unnest(v_cond_names) c
                            UNION ALL SELECT 't:' || l, true, false FROM unnest(p_locks) l
                            UNION ALL SELECT 'i:' || i, true, false FROM unnest(v_ids) i) w
                     GROUP BY 1 ORDER BY 1) s;
        ELSE
            -- append_v4's way: the plan, then (over budget) its collapse, then the locks
            SELECT array_agg(s.k ORDER BY s.k), array_agg(s.x ORDER BY s.k), array_agg(s.n ORDER BY s.k),
                   array_agg(s.k) FILTER (WHERE s.w)
              INTO v_keys, v_excl, v_names, v_trace_keys
              FROM (SELECT dcb.lock_key_v2(w.n) AS k, bool_or(w.x) AS x, min(w.n) AS n, bool_or(w.w) AS w
                      FROM (SELECT 't:' || t AS n, false AS x, true AS w FROM unnest(v_event_tags) t
                            UNION ALL SELECT c, false, true FROM unnest(v_write_names) c
                            UNION ALL SELECT 'g:', false, false WHERE v_participant
                            UNION ALL SELECT c, true, false FROM unnest(v_cond_names) c
                            UNION ALL SELECT 't:' || l, true, false FROM unnest(p_locks) l
                            UNION ALL SELECT 'i:' || i, true, false FROM unnest(v_ids) i) w
                     GROUP BY 1) s;
            IF cardinality(v_keys) > c_max_keys THEN
                -- Over budget, the write and lock keys collapse into the global key taken
                -- exclusively (every conditional or locking append holds it shared), a
                -- condition into the "all" key, and one trace row for the global key stands
                -- for all.
                SELECT array_agg(s.k ORDER BY s.k), array_agg(true), array_agg(s.n ORDER BY s.k)
                  INTO v_keys, v_excl, v_names
                  FROM (SELECT DISTINCT dcb.lock_key_v2(c) AS k, c AS n
                          FROM unnest(CASE WHEN cardinality(v_cond_names) > c_max_keys THEN '{a:}'
                                           ELSE v_cond_names END || '{g:}'::text[]) c) s;
                v_trace_keys := ARRAY[dcb.lock_key_v2('g:')];
            END IF;
            PERFORM count(CASE WHEN x THEN pg_advisory_xact_lock((k >> 32)::bit(32)::int, k::bit(32)::int)::text
                               ELSE pg_advisory_xact_lock_shared((k >> 32)::bit(32)::int, k::bit(32)::int)::text END)
            FROM (SELECT k, x FROM unnest(v_keys, v_excl) WITH ORDINALITY AS u(k, x, i) ORDER BY i) ordered;
        END IF;
        lock_wait_ms := extract(epoch FROM clock_timestamp() - v_lock_started) * 1000;

        -- The transaction id is assigned here, before any position is taken: the snapshot probe
        -- relies on "a transaction that started after a snapshot takes positions above every
        -- position that snapshot sees".
        v_xid := pg_current_xact_id();
        -- The in-flight marker: a lower bound of every position this transaction will take,
        -- held until it ends, so readers never report a head above it. The setting records the
        -- transaction's first marker (check_snapshot_v1 reads it); every append takes the lock
        -- again, on the setting's marker if it is this transaction's and not above the
        -- sequence (held already: no new lock), else on a new one. A setting the session
        -- forged (revision 0008 trusted it and took no lock) then holds readers back at most;
        -- a session-level SET, RESET or garbage only costs a new marker.
        -- last_value + 1 through a function call, not a statement (NULL: never called)
        v_marker := pg_sequence_last_value('dcb.events_position_seq'::regclass) + 1;
        IF v_marker IS NULL THEN
            SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
              INTO v_marker FROM dcb.events_position_seq;
        END IF;
        v_setting := coalesce(current_setting('dcb.in_flight_marker', true), '');
        v_held := CASE WHEN split_part(v_setting, ':', 1) = v_xid::text
                            AND split_part(v_setting, ':', 2) ~ '^[0-9]{1,17}$'
                       THEN split_part(v_setting, ':', 2)::bigint END;
        IF v_held IS NOT NULL AND v_held <= v_marker THEN
            v_marker := v_held;
        ELSE
            v_void := set_config('dcb.in_flight_marker',
                                 v_xid::text || ':' || (v_marker & 72057594037927935)::text, true);
        END IF;
        v_marker := (v_marker & 72057594037927935) | (-2522015791327477760);
        v_void := pg_advisory_xact_lock_shared((v_marker >> 32)::bit(32)::int,
                                               v_marker::bit(32)::int)::text;

        -- Idempotency, before the condition (a retried batch must not fail on its own events):
        -- a batch whose ids are all stored, in the same order, is a replay and returns the
        -- original last position; any other overlap is an error.
        IF v_has_ids THEN
            SELECT array_agg(id ORDER BY position), max(position), min(position)
              INTO v_stored, last_position, v_pos
              FROM dcb.events WHERE id = ANY (v_ids);
            IF v_stored IS NOT NULL THEN
                IF v_stored = v_ids AND cardinality(v_ids) = jsonb_array_length(p_events) THEN
                    RAISE EXCEPTION USING ERRCODE = 'DCB05', MESSAGE = 'batch already stored',
                        DETAIL = last_position::text;
                END IF;
                RAISE EXCEPTION USING ERRCODE = 'DCB04', MESSAGE = 'event id already stored',
                    DETAIL = v_pos::text;
            END IF;
        END IF;

        -- The condition, checked after the locks: at READ COMMITTED each statement here takes a
        -- new snapshot, which sees everything the previous holders of our keys committed.
        IF p_condition IS NOT NULL THEN
            v_cached := coalesce(current_setting('dcb.hot_tags', true), '');
            v_now := extract(epoch FROM clock_timestamp())::bigint;
            FOR v_i IN 0 .. jsonb_array_length(v_items) - 1 LOOP
                IF NOT v_one_item THEN
                    v_tags := ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->v_i->'tags', '[]')));
                    v_types := ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->v_i->'types', '[]')));
                END IF;
                -- the session's cached list, read inline (cached_hot_tags_v1); the call only
                -- when the cache does not hold
                v_hot := cardinality(v_tags) > 0
                         AND coalesce(v_tags <@ dcb.cached_hot_tags_v1(v_cached, v_now),
                                      dcb.tags_are_hot_v1(v_tags));
                -- A rare tag through the tag (GIN) index ("+ 0" keeps the planner off the
                -- primary key), a hot one by walking the primary key from `after`
                IF v_hot AND cardinality(v_types) = 0 THEN
                    -- the usual hot condition (a tenant's tag): walk the primary key from
                    -- `after` with a plan cached for the session ("|| '{}'" keeps the tag index
                    -- out of it); planning with the values cost about 1 ms per append
                    SELECT min(e.position) INTO v_pos FROM dcb.events e
                    WHERE e.position > v_after AND (e.tags || '{}'::text[]) @> v_tags;
                ELSIF v_hot THEN
                    -- planned with the values: the type filter may be the selective part
                    EXECUTE 'SELECT min(e.position) FROM dcb.events e WHERE e.tags @> $1 '
                            'AND ($2 = ''{}'' OR e.type = ANY ($2)) AND e.position > $3'
                       INTO v_pos USING v_tags, v_types, v_after;
                ELSIF cardinality(v_tags) > 0 THEN
                    SELECT min(e.position + 0) INTO v_pos FROM dcb.events e
                    WHERE e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types))
                      AND e.position + 0 > v_after;
                ELSIF cardinality(v_types) > 0 THEN
                    -- EXECUTE plans with the actual values: under a generic plan a type that is
                    -- common in the statistics sends the planner down the primary key, which
                    -- for a rare type scans the whole store
                    EXECUTE 'SELECT min(e.position) FROM dcb.events e '
                            'WHERE e.type = ANY ($1) AND e.position > $2'
                       INTO v_pos USING v_types, v_after;
                ELSE
                    SELECT min(e.position) INTO v_pos FROM dcb.events e WHERE e.position > v_after;
                END IF;
                IF v_pos IS NOT NULL AND (v_conflict IS NULL OR v_pos < v_conflict) THEN
                    v_conflict := v_pos;
                END IF;
            END LOOP;
            IF v_conflict IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'DCB01', MESSAGE = 'append condition failed',
                    DETAIL = v_conflict::text;
            END IF;
            -- Under a transaction snapshot the check above may be stale: probe for writers of
            -- the condition's keys that the snapshot cannot see (raises 40001).
            IF current_setting('transaction_isolation') <> 'read committed' THEN
                PERFORM dcb.check_snapshot_v1(
                    ARRAY(SELECT dcb.lock_key_v2(c) FROM unnest(v_cond_names) c), NULL);
            END IF;
        END IF;
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- the caller's later statements keep the lock_timeout they had
            PERFORM set_config('lock_timeout', v_old_timeout, true);
        END IF;
    EXCEPTION
        WHEN lock_not_available THEN
            lock_wait_ms := extract(epoch FROM clock_timestamp() - v_lock_started) * 1000;
            IF v_keys IS NULL THEN
                -- the statement that plans and locks failed before it could assign: the plan
                -- again, without locks, for the names below
                SELECT array_agg(s.k ORDER BY s.k), array_agg(s.x ORDER BY s.k), array_agg(s.n ORDER BY s.k)
                  INTO v_keys, v_excl, v_names
                  FROM (SELECT dcb.lock_key_v2(w.n) AS k, bool_or(w.x) AS x, min(w.n) AS n
                          FROM (SELECT 't:' || t AS n, false AS x FROM unnest(v_event_tags) t
                                UNION ALL SELECT c, false FROM unnest(v_write_names) c
                                UNION ALL SELECT 'g:', false WHERE v_participant
                                UNION ALL SELECT c, true FROM unnest(v_cond_names) c
                                UNION ALL SELECT 't:' || l, true FROM unnest(p_locks) l
                                UNION ALL SELECT 'i:' || i, true FROM unnest(v_ids) i) w
                         GROUP BY 1) s;
            END IF;
            -- name the keys other transactions hold in a mode that blocks ours
            SELECT string_agg(DISTINCT u.n || CASE WHEN u.x THEN ' (exclusive)' ELSE ' (shared)' END
                                || ' held by pid ' || l.pid, ', ')
              INTO detail
              FROM unnest(v_keys, v_excl, v_names) AS u(k, x, n)
              JOIN pg_locks l
                ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
               AND l.pid <> pg_backend_pid()
               AND ((l.classid::bigint << 32) | l.objid::bigint) = u.k
               AND (u.x OR l.mode = 'ExclusiveLock')
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
            outcome := '55P03';
            last_position := NULL;
            RETURN;
        WHEN SQLSTATE 'DCB05' THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
            outcome := '00000';
            last_position := detail::bigint;
            detail := NULL;
            RETURN;
        WHEN SQLSTATE 'DCB01' OR SQLSTATE 'DCB04' THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, outcome = RETURNED_SQLSTATE;
            conflict_position := detail::bigint;
            last_position := NULL;
            detail := NULL;
            RETURN;
        WHEN serialization_failure THEN
            GET STACKED DIAGNOSTICS detail = MESSAGE_TEXT;
            outcome := '40001';
            last_position := NULL;
            RETURN;
    END;

    IF NOT v_has_ids AND v_one_event THEN
        -- One event without an id (the usual append): it and its write traces in one
        -- statement. Trace rows: one per key written, per transaction (a later append of the
        -- same transaction keeps the first row); always ON CONFLICT, as the marker setting
        -- cannot say whether an append is the transaction's first (RESET ALL or a SET clears it),
        -- and rows restored from another server's dump may carry this transaction's id.
        WITH ev AS (
            INSERT INTO dcb.events (type, tags, data, metadata)
            VALUES (p_events->0->>'type', v_event_tags, p_events->0->'data',
                    nullif(p_events->0->'metadata', 'null'::jsonb))
            RETURNING position
        ), traced AS (
            INSERT INTO dcb.append_traces (xid, key, first_position)
            SELECT v_xid, k, ev.position FROM ev, unnest(v_trace_keys) k
            ON CONFLICT DO NOTHING
        )
        SELECT ev.position INTO v_first FROM ev;
        last_position := v_first;
    ELSE
        -- A batch, or events with ids, as in append_v3
        IF NOT v_has_ids THEN
            SELECT i.first_position, i.last_position INTO v_first, last_position
              FROM dcb.insert_events_v1(p_events) i;
        ELSE
            BEGIN
                SELECT i.first_position, i.last_position INTO v_first, last_position
                  FROM dcb.insert_events_v1(p_events) i;
            EXCEPTION WHEN unique_violation THEN
                -- the id key serialized us with any other batch carrying these ids, so the
                -- stored ones committed after this transaction's snapshot: retry in a new
                -- transaction, where the replay check sees them
                outcome := '40001';
                last_position := NULL;
                detail := 'an event id of this batch was stored by a transaction this snapshot cannot see';
                RETURN;
            END;
        END IF;
        INSERT INTO dcb.append_traces (xid, key, first_position)
        SELECT v_xid, k, v_first FROM unnest(v_trace_keys) k
        ON CONFLICT DO NOTHING;
    END IF;
    -- every 1,024 positions, one append forgets old traces
    IF last_position / 1024 > (v_first - 1) / 1024 THEN
        PERFORM dcb.prune_traces_v2();
    END IF;
    -- once a minute per session, the shared hot-tag list (readers, whose transactions mostly
    -- roll back, cannot keep it themselves); a setting of any other form counts as never
    v_refreshed := coalesce(current_setting('dcb.hot_tags_refreshed', true), '');
    -- (parenthesized: PL/pgSQL's IF would end at the CASE's THEN)
    IF (CASE WHEN v_refreshed ~ '^[0-9]{1,15}$'
             THEN v_refreshed::bigint < extract(epoch FROM clock_timestamp())::bigint - 60
             ELSE true END) THEN
        PERFORM dcb.refresh_hot_tags_v1();
    END IF;
    outcome := '00000';
END
$$;

-- Superseded by append_v5 (revision 0008), and kept as it is for code of the previous release.
-- Append a batch, in one round trip: take the advisory locks, check the condition, probe the
-- snapshot, insert, record the write traces. Version 4 of the append (revision 0007): the
-- protocol of version 3 (below) in fewer statements. append_v3 spent most of its time between
-- statements, not in them: about fifteen SQL statements and five nested function calls (each
-- with its own settings to switch) per append, most of it to compute the same key names three
-- times (lock plan, traces, condition keys). append_v4 computes names, keys, modes and trace
-- keys in one statement, inserts in its own body, skips the calls a plain append does not need,
-- and returns one row without a set-returning function. Locks, markers, traces, the probe and
-- the outcomes are append_v3's: appends of both versions serialize with each other during a
-- deploy (same keys, same modes).
--   p_events:  [{"type": t, "tags": [stored tags], "data": d, "metadata": m|null, "id": uuid|null}]
--   p_locks:   keys named by lock: tags (stored form), locked exclusively
--   p_condition: null, or {"items": [{"types": [...], "tags": [...]}, ...], "after": n|null}
--   p_lock_timeout_ms: null to keep the session's lock_timeout
-- Outcomes (returned, never raised, so the caller's transaction stays usable; a failed append
-- releases every lock it took):
--   00000 stored (or replayed); DCB01 condition failed; DCB04 id stored by another batch;
--   55P03 lock timeout (detail: the keys held by others); 40001 stale snapshot.
-- SECURITY DEFINER: writers have no INSERT on dcb.events; they append only through the append
-- functions, which run as the schema's owner, so positions, recorded_at, ids and the write
-- traces cannot be forged or skipped. They refuse a session whose login role is not a store role
-- (see "Trust").
CREATE FUNCTION dcb.append_v4(
    p_events jsonb,
    p_locks text[],
    p_condition jsonb,
    p_lock_timeout_ms integer,
    OUT outcome text,
    OUT last_position bigint,
    OUT conflict_position bigint,
    OUT lock_wait_ms double precision,
    OUT detail text
)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    c_max_keys constant integer := 256;
    c_max_events constant integer := 20000;  -- MAX_BATCH_EVENTS
    v_participant boolean := p_condition IS NOT NULL OR cardinality(p_locks) > 0;
    v_after bigint := coalesce((p_condition->>'after')::bigint, 0);
    v_has_ids boolean;
    v_cond_names text[] := '{}';
    v_write_names text[];
    v_items jsonb;
    v_one_item boolean := false;
    v_i integer;
    v_ids uuid[];
    v_stored uuid[];
    v_keys bigint[];
    v_excl boolean[];
    v_names text[];
    v_trace_keys bigint[];
    v_old_timeout text;
    v_conflict bigint;
    v_pos bigint;
    v_tags text[];
    v_types text[];
    v_first bigint;
    v_xid xid8;
    v_lock_started timestamptz;
BEGIN
    lock_wait_ms := 0;
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'append needs a non-empty JSON array of events';
    END IF;
    IF jsonb_array_length(p_events) > c_max_events THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('a batch holds at most %s events', c_max_events);
    END IF;
    -- readers trust in-flight markers by the session's login role (is_store_role_v1): a marker
    -- they would ignore must not exist, so such a session may not append. The direct privilege
    -- answers at once for the usual login role; membership is looked up only when it does not.
    IF NOT has_function_privilege(session_user, 'dcb.append_v3(jsonb, text[], jsonb, integer)'::regprocedure, 'EXECUTE')
       AND NOT dcb.is_store_role_v1((SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user)) THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('role %s may not append: its sessions are not the store''s', session_user),
            HINT = 'append from a session whose login role is (a member of) a store writer role';
    END IF;
    IF p_condition IS NOT NULL THEN
        v_items := coalesce(p_condition->'items', '[{}]');
        IF jsonb_typeof(v_items) = 'array' AND jsonb_array_length(v_items) = 1
           AND jsonb_typeof(v_items->0) = 'object' THEN
            -- one item, the usual condition: its tags and types once, for its key and its check
            v_tags := ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->0->'tags', '[]')));
            v_types := ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->0->'types', '[]')));
            IF cardinality(v_tags) > 100 OR cardinality(v_types) > 100
               OR array_position(v_tags, NULL) IS NOT NULL
               OR array_position(v_types, NULL) IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = 'a query holds at most 100 items of at most 100 types and 100 tags each, none of them null';
            END IF;
            -- the item's key: its least tag (all its tags must match), else each of its types
            -- (any may match), else "all"
            v_cond_names := CASE
                WHEN cardinality(v_tags) = 1 THEN ARRAY['t:' || v_tags[1]]
                WHEN cardinality(v_tags) > 1 THEN ARRAY(SELECT 't:' || min(t) FROM unnest(v_tags) t)
                WHEN cardinality(v_types) > 0 THEN ARRAY(SELECT 'y:' || y FROM unnest(v_types) y)
                ELSE '{a:}'::text[] END;
            v_one_item := true;
        ELSE
            -- check_items_v1 and query_key_names_v1, inlined (each call switches settings)
            IF jsonb_typeof(v_items) <> 'array' OR jsonb_array_length(v_items) > 100
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_items) it
                          WHERE jsonb_typeof(it) <> 'object'
                             OR jsonb_array_length(coalesce(it->'types', '[]')) > 100
                             OR jsonb_array_length(coalesce(it->'tags', '[]')) > 100
                             OR jsonb_path_exists(it, '$.tags[*] ? (@ == null)')
                             OR jsonb_path_exists(it, '$.types[*] ? (@ == null)')) THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = 'a query holds at most 100 items of at most 100 types and 100 tags each, none of them null';
            END IF;
            -- each item's key, as above
            v_cond_names := ARRAY(
                SELECT n
                  FROM jsonb_array_elements(v_items) it,
                       LATERAL (SELECT 't:' || min(t) FROM jsonb_array_elements_text(it->'tags') t
                                 WHERE jsonb_array_length(coalesce(it->'tags', '[]')) > 0
                                UNION ALL
                                SELECT 'y:' || y FROM jsonb_array_elements_text(it->'types') y
                                 WHERE jsonb_array_length(coalesce(it->'tags', '[]')) = 0
                                UNION ALL
                                SELECT 'a:'
                                 WHERE jsonb_array_length(coalesce(it->'tags', '[]')) = 0
                                   AND jsonb_array_length(coalesce(it->'types', '[]')) = 0) k(n)
                 WHERE n IS NOT NULL);
        END IF;
    END IF;
    -- any id that is not JSON null, as append_v3's "->> 'id' IS NOT NULL" (strict: lax mode
    -- would unwrap "id": [] to nothing; here it is an id, and fails its uuid cast below)
    v_has_ids := jsonb_path_exists(p_events, 'strict $[*] ? (@.id.type() != "null")');
    IF v_has_ids THEN
        v_ids := ARRAY(SELECT (x->>'id')::uuid
                         FROM jsonb_array_elements(p_events) WITH ORDINALITY AS a(x, n)
                        WHERE x->>'id' IS NOT NULL ORDER BY n);
    END IF;
    -- what the events write: their tags, their types and "all"
    IF jsonb_array_length(p_events) = 1 THEN
        v_write_names := ARRAY(SELECT 't:' || t FROM jsonb_array_elements_text(p_events->0->'tags') t)
                         || ARRAY['y:' || (p_events->0->>'type'), 'a:'];
    ELSE
        v_write_names := ARRAY(SELECT 't:' || t
                                 FROM jsonb_array_elements(p_events) e,
                                      jsonb_array_elements_text(e->'tags') t
                               UNION SELECT 'y:' || (e->>'type') FROM jsonb_array_elements(p_events) e)
                         || '{a:}'::text[];
    END IF;

    -- The lock plan and the trace keys in one statement, in one global key order (no deadlock
    -- between appends): exclusive for what the condition reads, for lock: tags and for event
    -- ids, shared for what the events write, plus the global key shared for a conditional or
    -- locking append. Trace keys: the keys of what the events write.
    SELECT array_agg(s.k ORDER BY s.k), array_agg(s.x ORDER BY s.k), array_agg(s.n ORDER BY s.k),
           array_agg(s.k) FILTER (WHERE s.w)
      INTO v_keys, v_excl, v_names, v_trace_keys
      FROM (SELECT dcb.lock_key_v2(w.n) AS k, bool_or(w.x) AS x, min(w.n) AS n, bool_or(w.w) AS w
              FROM (SELECT c AS n, false AS x, true AS w FROM unnest(v_write_names) c
                    UNION ALL SELECT 'g:', false, false WHERE v_participant
                    UNION ALL SELECT c, true, false FROM unnest(v_cond_names) c
                    UNION ALL SELECT 't:' || l, true, false FROM unnest(p_locks) l
                    UNION ALL SELECT 'i:' || i, true, false FROM unnest(v_ids) i) w
             GROUP BY 1) s;
    IF cardinality(v_keys) > c_max_keys THEN
        -- Over budget, the write and lock keys collapse into the global key taken exclusively
        -- (every conditional or locking append holds it shared), a condition into the "all"
        -- key, and one trace row for the global key stands for all.
        SELECT array_agg(s.k ORDER BY s.k), array_agg(true), array_agg(s.n ORDER BY s.k)
          INTO v_keys, v_excl, v_names
          FROM (SELECT DISTINCT dcb.lock_key_v2(c) AS k, c AS n
                  FROM unnest(CASE WHEN cardinality(v_cond_names) > c_max_keys THEN '{a:}'
                                   ELSE v_cond_names END || '{g:}'::text[]) c) s;
        v_trace_keys := ARRAY[dcb.lock_key_v2('g:')];
    END IF;

    BEGIN  -- a subtransaction: a failed append releases the locks it took
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- restored below; on an error the subtransaction's rollback restores it
            v_old_timeout := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
        END IF;
        v_lock_started := clock_timestamp();
        PERFORM count(CASE WHEN x THEN pg_advisory_xact_lock((k >> 32)::bit(32)::int, k::bit(32)::int)::text
                           ELSE pg_advisory_xact_lock_shared((k >> 32)::bit(32)::int, k::bit(32)::int)::text END)
        FROM (SELECT k, x FROM unnest(v_keys, v_excl) WITH ORDINALITY AS u(k, x, i) ORDER BY i) ordered;
        lock_wait_ms := extract(epoch FROM clock_timestamp() - v_lock_started) * 1000;

        -- The transaction id is assigned here, before any position is taken: the snapshot probe
        -- relies on "a transaction that started after a snapshot takes positions above every
        -- position that snapshot sees".
        v_xid := pg_current_xact_id();
        -- The in-flight marker: a lower bound of every position this transaction will take,
        -- held until it ends, so readers never report a head above it. Since revision 0010
        -- every append takes the lock, as append_v5's does since revision 0009: on the
        -- setting's marker if the setting is this transaction's and not above the sequence
        -- (held already: no new lock), else on a new one, which the setting then records. A
        -- setting the session forged (these bodies trusted any setting naming the transaction
        -- and took no lock) holds readers back at most.
        PERFORM CASE WHEN s.held <= s.fresh THEN NULL
                     ELSE set_config('dcb.in_flight_marker',
                                     v_xid::text || ':' || (s.fresh & 72057594037927935)::text, true)
                END,
                pg_advisory_xact_lock_shared((s.m >> 32)::bit(32)::int, s.m::bit(32)::int)::text
          FROM (SELECT f.fresh, f.held,
                       (CASE WHEN f.held <= f.fresh THEN f.held ELSE f.fresh END
                        & 72057594037927935) | (-2522015791327477760) AS m
                  FROM (SELECT CASE WHEN seq.is_called THEN seq.last_value + 1 ELSE seq.last_value END
                                   AS fresh,
                               CASE WHEN split_part(cur.setting, ':', 1) = v_xid::text
                                         AND split_part(cur.setting, ':', 2) ~ '^[0-9]{1,17}$'
                                    THEN split_part(cur.setting, ':', 2)::bigint END AS held
                          FROM dcb.events_position_seq seq,
                               (SELECT coalesce(current_setting('dcb.in_flight_marker', true), '')
                                       AS setting) cur) f) s;

        -- Idempotency, before the condition (a retried batch must not fail on its own events):
        -- a batch whose ids are all stored, in the same order, is a replay and returns the
        -- original last position; any other overlap is an error.
        IF v_has_ids THEN
            SELECT array_agg(id ORDER BY position), max(position), min(position)
              INTO v_stored, last_position, v_pos
              FROM dcb.events WHERE id = ANY (v_ids);
            IF v_stored IS NOT NULL THEN
                IF v_stored = v_ids AND cardinality(v_ids) = jsonb_array_length(p_events) THEN
                    RAISE EXCEPTION USING ERRCODE = 'DCB05', MESSAGE = 'batch already stored',
                        DETAIL = last_position::text;
                END IF;
                RAISE EXCEPTION USING ERRCODE = 'DCB04', MESSAGE = 'event id already stored',
                    DETAIL = v_pos::text;
            END IF;
        END IF;

        -- The condition, checked after the locks: at READ COMMITTED each statement here takes a
        -- new snapshot, which sees everything the previous holders of our keys committed.
        IF p_condition IS NOT NULL THEN
            FOR v_i IN 0 .. jsonb_array_length(v_items) - 1 LOOP
                IF NOT v_one_item THEN
                    v_tags := ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->v_i->'tags', '[]')));
                    v_types := ARRAY(SELECT jsonb_array_elements_text(coalesce(v_items->v_i->'types', '[]')));
                END IF;
                -- A rare tag through the tag (GIN) index ("+ 0" keeps the planner off the
                -- primary key), a hot one by walking the primary key from `after`
                IF cardinality(v_tags) > 0 AND cardinality(v_types) = 0
                   AND dcb.tags_are_hot_v1(v_tags) THEN
                    -- the usual hot condition (a tenant's tag): walk the primary key from
                    -- `after` with a plan cached for the session ("|| '{}'" keeps the tag index
                    -- out of it); planning with the values cost about 1 ms per append
                    SELECT min(e.position) INTO v_pos FROM dcb.events e
                    WHERE e.position > v_after AND (e.tags || '{}'::text[]) @> v_tags;
                ELSIF cardinality(v_tags) > 0 AND dcb.tags_are_hot_v1(v_tags) THEN
                    -- planned with the values: the type filter may be the selective part
                    EXECUTE 'SELECT min(e.position) FROM dcb.events e WHERE e.tags @> $1 '
                            'AND ($2 = ''{}'' OR e.type = ANY ($2)) AND e.position > $3'
                       INTO v_pos USING v_tags, v_types, v_after;
                ELSIF cardinality(v_tags) > 0 THEN
                    SELECT min(e.position + 0) INTO v_pos FROM dcb.events e
                    WHERE e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types))
                      AND e.position + 0 > v_after;
                ELSIF cardinality(v_types) > 0 THEN
                    -- EXECUTE plans with the actual values: under a generic plan a type that is
                    -- common in the statistics sends the planner down the primary key, which
                    -- for a rare type scans the whole store
                    EXECUTE 'SELECT min(e.position) FROM dcb.events e '
                            'WHERE e.type = ANY ($1) AND e.position > $2'
                       INTO v_pos USING v_types, v_after;
                ELSE
                    SELECT min(e.position) INTO v_pos FROM dcb.events e WHERE e.position > v_after;
                END IF;
                IF v_pos IS NOT NULL AND (v_conflict IS NULL OR v_pos < v_conflict) THEN
                    v_conflict := v_pos;
                END IF;
            END LOOP;
            IF v_conflict IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'DCB01', MESSAGE = 'append condition failed',
                    DETAIL = v_conflict::text;
            END IF;
            -- Under a transaction snapshot the check above may be stale: probe for writers of
            -- the condition's keys that the snapshot cannot see (raises 40001).
            IF current_setting('transaction_isolation') <> 'read committed' THEN
                PERFORM dcb.check_snapshot_v1(
                    ARRAY(SELECT dcb.lock_key_v2(c) FROM unnest(v_cond_names) c), NULL);
            END IF;
        END IF;
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- the caller's later statements keep the lock_timeout they had
            PERFORM set_config('lock_timeout', v_old_timeout, true);
        END IF;
    EXCEPTION
        WHEN lock_not_available THEN
            lock_wait_ms := extract(epoch FROM clock_timestamp() - v_lock_started) * 1000;
            -- name the keys other transactions hold in a mode that blocks ours
            SELECT string_agg(DISTINCT u.n || CASE WHEN u.x THEN ' (exclusive)' ELSE ' (shared)' END
                                || ' held by pid ' || l.pid, ', ')
              INTO detail
              FROM unnest(v_keys, v_excl, v_names) AS u(k, x, n)
              JOIN pg_locks l
                ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
               AND l.pid <> pg_backend_pid()
               AND ((l.classid::bigint << 32) | l.objid::bigint) = u.k
               AND (u.x OR l.mode = 'ExclusiveLock')
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
            outcome := '55P03';
            last_position := NULL;
            RETURN;
        WHEN SQLSTATE 'DCB05' THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
            outcome := '00000';
            last_position := detail::bigint;
            detail := NULL;
            RETURN;
        WHEN SQLSTATE 'DCB01' OR SQLSTATE 'DCB04' THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, outcome = RETURNED_SQLSTATE;
            conflict_position := detail::bigint;
            last_position := NULL;
            detail := NULL;
            RETURN;
        WHEN serialization_failure THEN
            GET STACKED DIAGNOSTICS detail = MESSAGE_TEXT;
            outcome := '40001';
            last_position := NULL;
            RETURN;
    END;

    -- The batch, in order. One event without an id (the usual append) is inserted here: a call
    -- of insert_events_v1 switches settings; a batch, or events with ids, go through it as in
    -- append_v3.
    IF NOT v_has_ids AND jsonb_array_length(p_events) = 1 THEN
        INSERT INTO dcb.events (type, tags, data, metadata)
        VALUES (p_events->0->>'type',
                ARRAY(SELECT jsonb_array_elements_text(p_events->0->'tags')),
                p_events->0->'data',
                nullif(p_events->0->'metadata', 'null'::jsonb))
        RETURNING position INTO v_first;
        last_position := v_first;
    ELSIF NOT v_has_ids THEN
        SELECT i.first_position, i.last_position INTO v_first, last_position
          FROM dcb.insert_events_v1(p_events) i;
    ELSE
        BEGIN
            SELECT i.first_position, i.last_position INTO v_first, last_position
              FROM dcb.insert_events_v1(p_events) i;
        EXCEPTION WHEN unique_violation THEN
            -- the id key serialized us with any other batch carrying these ids, so the stored
            -- ones committed after this transaction's snapshot: retry in a new transaction,
            -- where the replay check sees them
            outcome := '40001';
            last_position := NULL;
            detail := 'an event id of this batch was stored by a transaction this snapshot cannot see';
            RETURN;
        END;
    END IF;

    -- The write traces: one row per key written, per transaction (a later append of the same
    -- transaction keeps the first row). Always ON CONFLICT: the marker setting cannot say
    -- whether an append is the transaction's first (RESET ALL or a SET clears it).
    INSERT INTO dcb.append_traces (xid, key, first_position)
    SELECT v_xid, k, v_first FROM unnest(v_trace_keys) k
    ON CONFLICT DO NOTHING;
    -- every 1,024 positions, one append forgets old traces
    IF last_position / 1024 > (v_first - 1) / 1024 THEN
        PERFORM dcb.prune_traces_v2();
    END IF;
    outcome := '00000';
END
$$;

-- Superseded by append_v4 (revision 0007), and kept as it is for code of the previous release.
-- Its EXECUTE privilege is also what makes a role a store role (is_store_role_v1), and
-- revision 0007 granted append_v4 to whoever could run it. Version 3 of the append (revision
-- 0006): the lock
-- plan and outcomes of version 2, plus write traces for every append, the snapshot probe for
-- conditional appends under a transaction snapshot, event-id keys (concurrent re-submissions of
-- one batch wait for each other instead of failing on the unique index), and a detail naming
-- what a lock timeout waited for. The same arguments and outcomes as append_v4, as rows of a
-- set-returning function.
CREATE FUNCTION dcb.append_v3(
    p_events jsonb,
    p_locks text[],
    p_condition jsonb,
    p_lock_timeout_ms integer
) RETURNS TABLE (outcome text, last_position bigint, conflict_position bigint,
                 lock_wait_ms double precision, detail text)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    c_max_keys constant integer := 256;
    c_max_events constant integer := 20000;  -- MAX_BATCH_EVENTS
    v_participant boolean := p_condition IS NOT NULL OR cardinality(p_locks) > 0;
    v_after bigint := coalesce((p_condition->>'after')::bigint, 0);
    v_tag_names text[];
    v_write_names text[];
    v_id_names text[];
    v_cond_names text[] := '{}';
    v_ids uuid[];
    v_stored uuid[];
    v_keys bigint[];
    v_excl boolean[];
    v_names text[];
    v_trace_keys bigint[];
    v_coarse boolean;
    v_old_timeout text;
    v_conflict bigint;
    v_pos bigint;
    v_tags text[];
    v_types text[];
    v_first bigint;
    v_last bigint;
    v_detail text;
    v_state text;
    v_xid xid8;
    v_lock_started timestamptz;
    v_lock_wait double precision := 0;
BEGIN
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'append needs a non-empty JSON array of events';
    END IF;
    IF jsonb_array_length(p_events) > c_max_events THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('a batch holds at most %s events', c_max_events);
    END IF;
    PERFORM dcb.check_items_v1(p_condition->'items');
    -- readers trust in-flight markers by the session's login role (is_store_role_v1): a marker
    -- they would ignore must not exist, so such a session may not append
    IF NOT dcb.is_store_role_v1((SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user)) THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('role %s may not append: its sessions are not the store''s', session_user),
            HINT = 'append from a session whose login role is (a member of) a store writer role';
    END IF;

    -- What the batch writes: its tag and type key names, and its event ids.
    SELECT coalesce(array_agg(DISTINCT 't:' || t) FILTER (WHERE t IS NOT NULL), '{}'),
           array_agg(DISTINCT 'y:' || (e->>'type')) || '{a:}'::text[],
           (SELECT array_agg((x->>'id')::uuid ORDER BY n)
              FROM jsonb_array_elements(p_events) WITH ORDINALITY AS a(x, n)
             WHERE x->>'id' IS NOT NULL)
      INTO v_tag_names, v_write_names, v_ids
      FROM jsonb_array_elements(p_events) e
      LEFT JOIN LATERAL jsonb_array_elements_text(e->'tags') t ON true;
    v_write_names := v_tag_names || v_write_names;
    v_id_names := ARRAY(SELECT 'i:' || i FROM unnest(v_ids) i);
    IF p_condition IS NOT NULL THEN
        v_cond_names := dcb.query_key_names_v1(p_condition->'items');
    END IF;

    -- The lock plan, in one global key order (no deadlock between appends): exclusive for what
    -- the condition reads, for lock: tags and for event ids, shared for what the events write.
    -- Over budget, the write and lock keys collapse into the global key taken exclusively (every
    -- conditional or locking append holds it shared) and a condition into the "all" key.
    WITH wanted AS (
        SELECT n, true AS x FROM unnest(v_cond_names) n
        UNION ALL SELECT 't:' || l, true FROM unnest(p_locks) l
        UNION ALL SELECT n, true FROM unnest(v_id_names) n
        UNION ALL SELECT n, false FROM unnest(v_write_names) n
        UNION ALL SELECT 'g:', false WHERE v_participant
    ), sized AS (
        SELECT count(DISTINCT n) > c_max_keys AS coarse FROM wanted
    ), planned AS (
        SELECT w.n, dcb.lock_key_v2(w.n) AS k, w.x FROM wanted w, sized WHERE NOT sized.coarse
        UNION ALL
        SELECT n, dcb.lock_key_v2(n), true
        FROM unnest(CASE WHEN cardinality(v_cond_names) > c_max_keys THEN '{a:}' ELSE v_cond_names END || '{g:}'::text[]) n,
             sized
        WHERE sized.coarse
    )
    SELECT array_agg(k ORDER BY k), array_agg(x ORDER BY k), array_agg(n ORDER BY k),
           bool_or(coarse)
      INTO v_keys, v_excl, v_names, v_coarse
    FROM (SELECT k, bool_or(x) AS x, string_agg(DISTINCT n, ' | ') AS n FROM planned GROUP BY k) s,
         (SELECT coarse FROM sized) z;

    BEGIN  -- a subtransaction: a failed append releases the locks it took
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- restored below; on an error the subtransaction's rollback restores it
            SELECT current_setting('lock_timeout'), set_config('lock_timeout', p_lock_timeout_ms || 'ms', true)
              INTO v_old_timeout, v_detail;
        END IF;
        v_lock_started := clock_timestamp();
        PERFORM count(CASE WHEN x THEN pg_advisory_xact_lock((k >> 32)::bit(32)::int, k::bit(32)::int)::text
                           ELSE pg_advisory_xact_lock_shared((k >> 32)::bit(32)::int, k::bit(32)::int)::text END)
        FROM (SELECT k, x FROM unnest(v_keys, v_excl) WITH ORDINALITY AS u(k, x, i) ORDER BY i) ordered;
        v_lock_wait := extract(epoch FROM clock_timestamp() - v_lock_started) * 1000;

        -- The transaction id is assigned here, before any position is taken: the snapshot probe
        -- relies on "a transaction that started after a snapshot takes positions above every
        -- position that snapshot sees".
        v_xid := pg_current_xact_id();
        -- The in-flight marker: a lower bound of every position this transaction will take,
        -- held until it ends, so readers never report a head above it. Since revision 0010
        -- every append takes the lock, as append_v5's does since revision 0009: on the
        -- setting's marker if the setting is this transaction's and not above the sequence
        -- (held already: no new lock), else on a new one, which the setting then records. A
        -- setting the session forged (these bodies trusted any setting naming the transaction
        -- and took no lock) holds readers back at most.
        PERFORM CASE WHEN s.held <= s.fresh THEN NULL
                     ELSE set_config('dcb.in_flight_marker',
                                     v_xid::text || ':' || (s.fresh & 72057594037927935)::text, true)
                END,
                pg_advisory_xact_lock_shared((s.m >> 32)::bit(32)::int, s.m::bit(32)::int)::text
          FROM (SELECT f.fresh, f.held,
                       (CASE WHEN f.held <= f.fresh THEN f.held ELSE f.fresh END
                        & 72057594037927935) | (-2522015791327477760) AS m
                  FROM (SELECT CASE WHEN seq.is_called THEN seq.last_value + 1 ELSE seq.last_value END
                                   AS fresh,
                               CASE WHEN split_part(cur.setting, ':', 1) = v_xid::text
                                         AND split_part(cur.setting, ':', 2) ~ '^[0-9]{1,17}$'
                                    THEN split_part(cur.setting, ':', 2)::bigint END AS held
                          FROM dcb.events_position_seq seq,
                               (SELECT coalesce(current_setting('dcb.in_flight_marker', true), '')
                                       AS setting) cur) f) s;

        -- Idempotency, before the condition (a retried batch must not fail on its own events):
        -- a batch whose ids are all stored, in the same order, is a replay and returns the
        -- original last position; any other overlap is an error.
        IF v_ids IS NOT NULL THEN
            SELECT array_agg(id ORDER BY position), max(position), min(position)
              INTO v_stored, v_last, v_pos
              FROM dcb.events WHERE id = ANY (v_ids);
            IF v_stored IS NOT NULL THEN
                IF v_stored = v_ids AND cardinality(v_ids) = jsonb_array_length(p_events) THEN
                    RAISE EXCEPTION USING ERRCODE = 'DCB05', MESSAGE = 'batch already stored',
                        DETAIL = v_last::text;
                END IF;
                RAISE EXCEPTION USING ERRCODE = 'DCB04', MESSAGE = 'event id already stored',
                    DETAIL = v_pos::text;
            END IF;
        END IF;

        -- The condition, checked after the locks: at READ COMMITTED each statement here takes a
        -- new snapshot, which sees everything the previous holders of our keys committed.
        IF p_condition IS NOT NULL THEN
            FOR v_tags, v_types IN
                SELECT ARRAY(SELECT jsonb_array_elements_text(coalesce(it->'tags', '[]'))),
                       ARRAY(SELECT jsonb_array_elements_text(coalesce(it->'types', '[]')))
                FROM jsonb_array_elements(coalesce(p_condition->'items', '[{}]')) it
            LOOP
                -- A rare tag through the tag (GIN) index ("+ 0" keeps the planner off the
                -- primary key), a hot one by walking the primary key from `after`
                IF cardinality(v_tags) > 0 AND dcb.tags_are_hot_v1(v_tags) THEN
                    -- planned with the values: the type filter may be the selective part
                    EXECUTE 'SELECT min(e.position) FROM dcb.events e WHERE e.tags @> $1 '
                            'AND ($2 = ''{}'' OR e.type = ANY ($2)) AND e.position > $3'
                       INTO v_pos USING v_tags, v_types, v_after;
                ELSIF cardinality(v_tags) > 0 THEN
                    SELECT min(e.position + 0) INTO v_pos FROM dcb.events e
                    WHERE e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types))
                      AND e.position + 0 > v_after;
                ELSIF cardinality(v_types) > 0 THEN
                    -- EXECUTE plans with the actual values: under a generic plan a type that is
                    -- common in the statistics sends the planner down the primary key, which
                    -- for a rare type scans the whole store
                    EXECUTE 'SELECT min(e.position) FROM dcb.events e '
                            'WHERE e.type = ANY ($1) AND e.position > $2'
                       INTO v_pos USING v_types, v_after;
                ELSE
                    SELECT min(e.position) INTO v_pos FROM dcb.events e WHERE e.position > v_after;
                END IF;
                IF v_pos IS NOT NULL AND (v_conflict IS NULL OR v_pos < v_conflict) THEN
                    v_conflict := v_pos;
                END IF;
            END LOOP;
            IF v_conflict IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'DCB01', MESSAGE = 'append condition failed',
                    DETAIL = v_conflict::text;
            END IF;
            -- Under a transaction snapshot the check above may be stale: probe for writers of
            -- the condition's keys that the snapshot cannot see (raises 40001).
            IF current_setting('transaction_isolation') <> 'read committed' THEN
                PERFORM dcb.check_snapshot_v1(
                    ARRAY(SELECT dcb.lock_key_v2(n) FROM unnest(v_cond_names) n), NULL);
            END IF;
        END IF;
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- the caller's later statements keep the lock_timeout they had
            PERFORM set_config('lock_timeout', v_old_timeout, true);
        END IF;
    EXCEPTION
        WHEN lock_not_available THEN
            v_lock_wait := extract(epoch FROM clock_timestamp() - v_lock_started) * 1000;
            -- name the keys other transactions hold in a mode that blocks ours
            SELECT string_agg(DISTINCT u.n || CASE WHEN u.x THEN ' (exclusive)' ELSE ' (shared)' END
                                || ' held by pid ' || l.pid, ', ')
              INTO v_detail
              FROM unnest(v_keys, v_excl, v_names) AS u(k, x, n)
              JOIN pg_locks l
                ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
               AND l.pid <> pg_backend_pid()
               AND ((l.classid::bigint << 32) | l.objid::bigint) = u.k
               AND (u.x OR l.mode = 'ExclusiveLock')
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
            RETURN QUERY SELECT '55P03'::text, NULL::bigint, NULL::bigint, v_lock_wait, v_detail;
            RETURN;
        WHEN SQLSTATE 'DCB05' THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
            RETURN QUERY SELECT '00000'::text, v_detail::bigint, NULL::bigint, v_lock_wait, NULL::text;
            RETURN;
        WHEN SQLSTATE 'DCB01' OR SQLSTATE 'DCB04' THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL, v_state = RETURNED_SQLSTATE;
            RETURN QUERY SELECT v_state, NULL::bigint, v_detail::bigint, v_lock_wait, NULL::text;
            RETURN;
        WHEN serialization_failure THEN
            GET STACKED DIAGNOSTICS v_detail = MESSAGE_TEXT;
            RETURN QUERY SELECT '40001'::text, NULL::bigint, NULL::bigint, v_lock_wait, v_detail;
            RETURN;
    END;

    IF v_ids IS NULL THEN
        SELECT i.first_position, i.last_position INTO v_first, v_last
          FROM dcb.insert_events_v1(p_events) i;
    ELSE
        BEGIN
            SELECT i.first_position, i.last_position INTO v_first, v_last
              FROM dcb.insert_events_v1(p_events) i;
        EXCEPTION WHEN unique_violation THEN
            -- the id key serialized us with any other batch carrying these ids, so the stored
            -- ones committed after this transaction's snapshot: retry in a new transaction,
            -- where the replay check sees them
            RETURN QUERY SELECT '40001'::text, NULL::bigint, NULL::bigint, v_lock_wait,
                'an event id of this batch was stored by a transaction this snapshot cannot see'::text;
            RETURN;
        END;
    END IF;

    -- The write traces: one row per key written, per transaction (a later append of the same
    -- transaction keeps the first row). Over budget, one row for the global key stands for all.
    INSERT INTO dcb.append_traces (xid, key, first_position)
    SELECT v_xid, dcb.lock_key_v2(n), v_first
      FROM unnest(CASE WHEN v_coarse THEN '{g:}'::text[] ELSE v_write_names END) n
    ON CONFLICT DO NOTHING;
    -- every 1,024 positions, one append forgets old traces
    IF v_last / 1024 > (v_first - 1) / 1024 THEN
        PERFORM dcb.prune_traces_v1();
    END IF;
    RETURN QUERY SELECT '00000'::text, v_last, NULL::bigint, v_lock_wait, NULL::text;
END
$$;

-- Superseded by append_v3 (revision 0006). Version 2 (revision 0004) added the lock wait to
-- version 1's result, for the lock-wait histogram of dcb_store.metrics. It is now a wrapper over
-- version 3, so that application code still calling it during a deploy leaves write traces too
-- (a decision made at REPEATABLE READ by new code must see old code's writers).
CREATE FUNCTION dcb.append_v2(
    p_events jsonb,
    p_locks text[],
    p_condition jsonb,
    p_lock_timeout_ms integer
) RETURNS TABLE (outcome text, last_position bigint, conflict_position bigint, lock_wait_ms double precision)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.outcome, a.last_position, a.conflict_position, a.lock_wait_ms
    FROM dcb.append_v3(p_events, p_locks, p_condition, p_lock_timeout_ms) a
$$;

-- Superseded by append_v2 (revision 0004), and through it a wrapper over append_v3: application
-- code still calling version 1 keeps working.
CREATE FUNCTION dcb.append_v1(
    p_events jsonb,
    p_locks text[],
    p_condition jsonb,
    p_lock_timeout_ms integer
) RETURNS TABLE (outcome text, last_position bigint, conflict_position bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.outcome, a.last_position, a.conflict_position
    FROM dcb.append_v2(p_events, p_locks, p_condition, p_lock_timeout_ms) a
$$;


-- ============================================================================================
-- Reading
-- ============================================================================================

-- Reads in one round trip (revision 0005; this body since revision 0010). Events matching
-- p_items (a JSON array of {"types": [...], "tags": [...]}; an empty item matches every event)
-- with p_after < position <= head, in position order (descending when p_backwards), at most
-- p_limit of them (NULL: no limit). Every row carries the safe head; a read that finds no event
-- returns one row holding only the head.
-- The in-flight cap and the events are two statements of one VOLATILE function: at READ
-- COMMITTED each statement of such a function takes a new snapshot, so the read still sees every
-- writer the cap let through. The cap ignores foreign sessions (in_flight_cap_v2) and, under a
-- transaction snapshot, the read probes its snapshot (check_snapshot_v1) and refuses instead of
-- returning a head that could hide a late commit (both since revision 0006). Reads of many items
-- of one tag each (many entities at once), none of them hot, take one scan of the tag index for
-- all of them instead of one per item (revision 0007). A read of one item sets itself up in
-- expressions, and a null tag or type is refused (revision 0010). SECURITY DEFINER: the probe inserts (and rolls back) rows of
-- dcb.append_traces, which readers may not write.
CREATE FUNCTION dcb.read_v1(
    p_items jsonb,
    p_after bigint,
    p_limit integer,
    p_backwards boolean
) RETURNS TABLE (
    head bigint, "position" bigint, type text, tags text[], data jsonb, metadata jsonb,
    id uuid, recorded_at timestamptz
)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- generic plans: a custom plan per call (re-planning every statement) cost more than it saved
SET plan_cache_mode = force_generic_plan
AS $$
-- the output columns are named like the table's: inside, a bare name means the column
#variable_conflict use_column
DECLARE
    v_cap bigint;
    v_keys bigint[];
    v_head bigint;
    v_all boolean;
    v_items integer;
    v_single_tags boolean;
    v_union text[];
    v_tags text[];
    v_types text[];
    v_found bigint[] := '{}';
    v_more bigint[];
    v_after constant bigint := coalesce(p_after, 0);
    v_order constant text := CASE WHEN p_backwards THEN 'DESC' ELSE 'ASC' END;
    -- (since revision 0010: a null tag or type matches no event, and its NULL key broke the
    -- snapshot probe with a not-null violation; refused up front, as append_v5 refuses it)
    c_null_message constant text := 'a query holds at most 100 items of at most 100 types and '
                                    '100 tags each, none of them null';
BEGIN
    IF jsonb_typeof(p_items) = 'array' AND jsonb_array_length(p_items) = 1
       AND jsonb_typeof(p_items->0) = 'object' THEN
        -- One item, the common read (a tag, an entity, a type): what check_items_v1,
        -- query_key_names_v1 and the shape's aggregates below compute for it, in expressions
        -- and one statement (revision 0010: the calls and statements cost a read about 55 us).
        -- The same checks in the same order, so the same errors.
        IF jsonb_array_length(coalesce(p_items->0->'types', '[]')) > 100
           OR jsonb_array_length(coalesce(p_items->0->'tags', '[]')) > 100 THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'a query holds at most 100 items of at most 100 types and 100 tags each';
        END IF;
        SELECT ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'tags', '[]'))),
               ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'types', '[]')))
          INTO v_tags, v_types;
        IF array_position(v_tags, NULL) IS NOT NULL OR array_position(v_types, NULL) IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = c_null_message;
        END IF;
        v_items := 1;
        v_all := cardinality(v_tags) = 0 AND cardinality(v_types) = 0;
        v_single_tags := cardinality(v_tags) = 1 AND cardinality(v_types) = 0;
        v_union := ARRAY[p_items->0->'tags'->>0];
        -- the item's key: its least tag, else each of its types, else "all"
        IF cardinality(v_tags) = 1 THEN
            v_keys := ARRAY[dcb.lock_key_v2('t:' || v_tags[1])];
        ELSIF cardinality(v_tags) > 1 THEN
            v_keys := ARRAY[dcb.lock_key_v2('t:' || (SELECT min(t) FROM unnest(v_tags) t))];
        ELSIF cardinality(v_types) > 0 THEN
            v_keys := ARRAY(SELECT DISTINCT dcb.lock_key_v2('y:' || y) FROM unnest(v_types) y);
        ELSE
            v_keys := ARRAY[dcb.lock_key_v2('a:')];
        END IF;
        -- Statement 1: the cap, computed before the snapshot of every statement that follows.
        v_cap := dcb.in_flight_cap_v2(v_keys);
        -- Statement 2, a new snapshot: the head.
        SELECT max(e.position) INTO v_head FROM dcb.events e WHERE e.position <= v_cap;
    ELSE
        PERFORM dcb.check_items_v1(p_items);
        IF jsonb_path_exists(p_items, '$[*].tags[*] ? (@ == null)')
           OR jsonb_path_exists(p_items, '$[*].types[*] ? (@ == null)') THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = c_null_message;
        END IF;
        -- Statement 1: the cap, computed before the snapshot of every statement that follows.
        v_keys := ARRAY(SELECT DISTINCT dcb.lock_key_v2(n) FROM unnest(dcb.query_key_names_v1(p_items)) n);
        v_cap := dcb.in_flight_cap_v2(v_keys);
        -- Statement 2, a new snapshot: the head; and the shape of the query.
        SELECT (SELECT max(e.position) FROM dcb.events e WHERE e.position <= v_cap),
               bool_or(jsonb_array_length(coalesce(it->'tags', '[]')) = 0
                       AND jsonb_array_length(coalesce(it->'types', '[]')) = 0),
               count(*),
               -- the first item's filters, for the one-item path below
               ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'tags', '[]'))),
               ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'types', '[]'))),
               -- every item one tag and no type: the union of items is the events with any of them
               bool_and(jsonb_array_length(coalesce(it->'tags', '[]')) = 1
                        AND jsonb_array_length(coalesce(it->'types', '[]')) = 0),
               array_agg(it->'tags'->>0)
          INTO v_head, v_all, v_items, v_tags, v_types, v_single_tags, v_union
          FROM jsonb_array_elements(p_items) it;
    END IF;
    -- Under a transaction snapshot these statements do not see what committed after it: a writer
    -- of the query's keys that was in flight at the snapshot and committed since, or one that
    -- started after it while this transaction appended above it, may sit below the head.
    -- Refuse (40001) rather than return a head that hides it.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM dcb.check_snapshot_v1(v_keys, v_head);
    END IF;

    IF v_all THEN
        IF p_backwards THEN
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e WHERE e.position > v_after AND e.position <= v_head
             ORDER BY e.position DESC LIMIT p_limit;
        ELSE
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e WHERE e.position > v_after AND e.position <= v_head
             ORDER BY e.position LIMIT p_limit;
        END IF;
    ELSIF v_items = 1 AND cardinality(v_tags) > 0 AND NOT dcb.tags_are_hot_v1(v_tags) THEN
        -- One tag item, the common read: the tag (GIN) index answers it, with a plan cached
        -- for the session. "+ 0" keeps the planner off the primary key, which it would walk
        -- for a position range it cannot estimate.
        RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
          FROM dcb.events e
         WHERE e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types))
           AND e.position + 0 > v_after AND e.position + 0 <= v_head
         ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
         LIMIT p_limit;
    ELSIF v_items = 1 AND cardinality(v_tags) > 0 AND cardinality(v_types) = 0 THEN
        -- One hot tag item without a type (a tenant's tag; tags_are_hot_v1 said so above):
        -- walk the primary key from `after`, with plans cached for the session ("|| '{}'"
        -- keeps the tag index out of them); planning with the values cost a caught-up
        -- follower's poll about 1 ms.
        IF p_backwards THEN
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e
             WHERE (e.tags || '{}'::text[]) @> v_tags AND e.position > v_after AND e.position <= v_head
             ORDER BY e.position DESC LIMIT p_limit;
        ELSE
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e
             WHERE (e.tags || '{}'::text[]) @> v_tags AND e.position > v_after AND e.position <= v_head
             ORDER BY e.position LIMIT p_limit;
        END IF;
    ELSIF v_items = 1 AND cardinality(v_tags) > 0 THEN
        -- One hot tag item with types (tags_are_hot_v1: on 5% of the events or more, as a
        -- tenant's tag is): the GIN index would hand over every one of its rows, unordered.
        -- Planned with the values: a walk of the primary key from `after`, or the type index
        -- when a type filter is the selective part.
        RETURN QUERY EXECUTE
            'SELECT $1, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at '
            'FROM dcb.events e WHERE e.tags @> $2 AND ($3 = ''{}'' OR e.type = ANY ($3)) '
            'AND e.position > $4 AND e.position <= $1 ORDER BY e.position ' || v_order
            || ' LIMIT $5'
          USING v_head, v_tags, v_types, v_after, p_limit;
    ELSIF v_single_tags AND v_items > 1
          AND NOT (SELECT bool_or(dcb.tags_are_hot_v1(ARRAY[t])) FROM unnest(v_union) t) THEN
        -- Items of one tag each, none hot: one scan of the tag index for all of them ("&&",
        -- any of the tags, is exactly the union of such items). A hot tag among them would
        -- bring all its rows: those reads take the per-item path below.
        RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
          FROM dcb.events e
         WHERE e.tags && v_union
           AND e.position + 0 > v_after AND e.position + 0 <= v_head
         ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
         LIMIT p_limit;
    ELSE
        -- Each item's positions (at most p_limit of them: enough for the union's first p_limit),
        -- then the events in one statement.
        FOR v_tags, v_types IN
            SELECT ARRAY(SELECT jsonb_array_elements_text(coalesce(it->'tags', '[]'))),
                   ARRAY(SELECT jsonb_array_elements_text(coalesce(it->'types', '[]')))
            FROM jsonb_array_elements(p_items) it
        LOOP
            IF cardinality(v_tags) > 0 AND dcb.tags_are_hot_v1(v_tags) THEN
                -- as for one hot tag item above
                EXECUTE 'SELECT ARRAY(SELECT e.position FROM dcb.events e '
                        'WHERE e.tags @> $1 AND ($2 = ''{}'' OR e.type = ANY ($2)) '
                        'AND e.position > $3 AND e.position <= $4 '
                        'ORDER BY e.position ' || v_order || ' LIMIT $5)'
                   INTO v_more USING v_tags, v_types, v_after, v_head, p_limit;
            ELSIF cardinality(v_tags) > 0 THEN
                -- as for one tag item above
                v_more := ARRAY(
                    SELECT e.position FROM dcb.events e
                     WHERE e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types))
                       AND e.position + 0 > v_after AND e.position + 0 <= v_head
                     ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
                     LIMIT p_limit);
            ELSE
                -- planned with the actual types: under a generic plan a type common in the
                -- statistics sends the planner down the primary key, for a rare type a full scan
                EXECUTE 'SELECT ARRAY(SELECT e.position FROM dcb.events e '
                        'WHERE e.type = ANY ($1) AND e.position > $2 AND e.position <= $3 '
                        'ORDER BY e.position ' || v_order || ' LIMIT $4)'
                   INTO v_more USING v_types, v_after, v_head, p_limit;
            END IF;
            v_found := v_found || v_more;
        END LOOP;
        RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
          FROM dcb.events e WHERE e.position = ANY (v_found)
         ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
         LIMIT p_limit;
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v_head, NULL::bigint, NULL::text, NULL::text[], NULL::jsonb, NULL::jsonb,
                            NULL::uuid, NULL::timestamptz;
    END IF;
END
$$;


-- ============================================================================================
-- Following (revisions 0003, 0005)
-- ============================================================================================
--
-- A NOTIFY on channel dcb_events after a statement that appends: PostgreSQL delivers it at
-- COMMIT (and never for a rolled-back transaction), which wakes subscribers without polling.
-- PostgreSQL serializes the commits of notifying transactions on one global lock, held through
-- the WAL flush, so with several writers every commit waited for the previous one: group commit
-- was lost and throughput at 8 connections halved (pgbench, one-event inserts: 3,800-4,200 tps
-- with a notify per statement, 6,300 without, 5,900 gated as below).
--
-- So only the transaction that holds the notify key (0xDE, taken without waiting, held until it
-- ends) notifies; a writer that overlaps it stays silent. A follower therefore cannot count on
-- a notification from every writer. Instead, before each read it asks whether appends are in
-- flight (appends_in_flight_v2): if none are, every append that commits later either notifies
-- or overlapped one that does, so the follower may sleep until a notification; if some are, it
-- polls again shortly (dcb_store.following).

-- The trigger function: a NOTIFY only from the transaction that holds the notify key.
CREATE FUNCTION dcb.notify_appended_v2() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the notify key: top byte 0xDE in the library's two-int4 lock space
    IF pg_try_advisory_xact_lock(-570425344, 0) THEN
        PERFORM pg_notify('dcb_events', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON dcb.events
    FOR EACH STATEMENT EXECUTE FUNCTION dcb.notify_appended_v2();

-- How many other sessions of the store hold an in-flight marker (appends not yet ended), plus
-- one if a foreign session holds the notify key (it silences notifications: followers must
-- poll as if appends were in flight). Revision 0006; PL/pgSQL since revision 0008 (a SQL
-- function with a SET clause is planned again in every transaction: 130 us per call).
CREATE FUNCTION dcb.appends_in_flight_v2() RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT (count(DISTINCT l.virtualtransaction)
                        FILTER (WHERE (l.classid::bigint >> 24) = 221
                                  AND dcb.is_store_holder_v1(l.pid, l.virtualtransaction))
                    + count(*) FILTER (WHERE l.classid::bigint = 3724541952 AND l.objid = 0 AND l.granted
                                         AND NOT dcb.is_store_holder_v1(l.pid, l.virtualtransaction)))::integer
              FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.pid IS DISTINCT FROM pg_backend_pid()
               AND (l.classid::bigint >> 24) IN (221, 222));
END
$$;

-- Superseded by appends_in_flight_v2 (revision 0006): how many other transactions hold an
-- in-flight marker, of any session.
CREATE FUNCTION dcb.appends_in_flight_v1() RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(DISTINCT l.pid)::integer
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid <> pg_backend_pid()
      AND (l.classid::bigint >> 24) = 221
$$;

-- Superseded by notify_appended_v2 (revision 0005): a NOTIFY after every appending statement.
-- No trigger uses it at head; the downgrade of revision 0005 attaches it again.
CREATE FUNCTION dcb.notify_appended_v1() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('dcb_events', '');
    RETURN NULL;
END
$$;


-- ============================================================================================
-- Erasure: history is append-only (revisions 0002, 0006)
-- ============================================================================================
--
-- UPDATE, DELETE and TRUNCATE on dcb.events are rejected with SQLSTATE DCB10. The deliberate,
-- documented escape hatch for a legal erasure: SELECT dcb.allow_erasure_v1() in that
-- transaction (which roles may call it is the operator's decision; see docs/usage.md).

-- The erasure switch. The setting must name the current transaction: allow_erasure_v1() sets it
-- so, transaction-locally. (Up to revision 0005 any 'on' value of dcb.allow_erasure was
-- accepted, which a session-level SET, ALTER ROLE ... SET or a connection option also supply, so
-- that every later transaction of the session or role could rewrite history.)
CREATE FUNCTION dcb.allow_erasure_v1() RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT set_config('dcb.allow_erasure', pg_current_xact_id()::text, true);
$$;

-- The trigger function: the change goes through only in the transaction that called
-- allow_erasure_v1(); anything else raises DCB10.
CREATE FUNCTION dcb.reject_history_change_v2() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(current_setting('dcb.allow_erasure', true), '') = pg_current_xact_id()::text THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'DCB10',
        MESSAGE = format('dcb.events is append-only: %s is rejected', TG_OP),
        HINT = 'for a deliberate erasure, SELECT dcb.allow_erasure_v1() in that transaction';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON dcb.events
    FOR EACH ROW EXECUTE FUNCTION dcb.reject_history_change_v2();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON dcb.events
    FOR EACH STATEMENT EXECUTE FUNCTION dcb.reject_history_change_v2();

-- Superseded by reject_history_change_v2 (revision 0006): the switch of revision 0002, any 'on'
-- value of dcb.allow_erasure. No trigger uses it at head; the downgrade of revision 0006
-- attaches it again.
CREATE FUNCTION dcb.reject_history_change_v1() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(current_setting('dcb.allow_erasure', true), '') = 'on' THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'DCB10',
        MESSAGE = format('dcb.events is append-only: %s is rejected', TG_OP),
        HINT = 'for a deliberate erasure, SET LOCAL dcb.allow_erasure = on in that transaction';
END
$$;


-- ============================================================================================
-- Monitoring (revision 0001)
-- ============================================================================================

-- How many advisory locks of this library are held or awaited in the current database.
CREATE FUNCTION dcb.get_advisory_lock_count() RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND (l.classid::bigint >> 24) IN (220, 221)
$$;

-- One row per advisory lock of this library in the current database, held or awaited.
-- waitstart exists from PostgreSQL 14 on; read through to_jsonb so that 13 works too.
CREATE FUNCTION dcb.get_advisory_lock_stats()
RETURNS TABLE (lock_key bigint, kind text, mode text, granted boolean, pid integer,
               application_name text, wait_seconds double precision, query text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (l.classid::bigint << 32) | l.objid::bigint,
           CASE WHEN (l.classid::bigint >> 24) = 220 THEN 'key' ELSE 'in-flight marker' END,
           l.mode, l.granted, l.pid, a.application_name,
           CASE WHEN NOT l.granted THEN
               extract(epoch FROM clock_timestamp()
                   - coalesce((to_jsonb(l)->>'waitstart')::timestamptz, a.state_change))::float8
           END,
           CASE WHEN NOT l.granted THEN a.query END
    FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND (l.classid::bigint >> 24) IN (220, 221)
    ORDER BY l.granted DESC, 1, l.pid
$$;


-- ============================================================================================
-- Privileges
-- ============================================================================================
--
-- PostgreSQL grants EXECUTE on every new function to PUBLIC. It is revoked from every function
-- of the schema: only the owner and the roles that dcb_store.roles granted may call them.
-- (ALTER DEFAULT PRIVILEGES cannot revoke PUBLIC's EXECUTE for one schema only; a revision that
-- creates functions ends with this same statement, and tests/test_grants.py fails while PUBLIC
-- can execute one.)
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA dcb FROM PUBLIC;

-- The tables and sequences keep PostgreSQL's defaults (the owner only): dcb_store.roles grants
-- readers, writers and projection runners what each needs (no role but the owner may INSERT,
-- UPDATE, DELETE or TRUNCATE dcb.events, dcb.key_clocks or dcb.append_traces, or use
-- dcb.events_position_seq: writers append through the append functions). Revision 0006 revoked
-- such rights from whoever an earlier version, or a DBA, had granted them to, and revisions 0007
-- and 0008 granted EXECUTE on append_v4 and append_v5 to every role that could run append_v3; a
-- new database has no such role.
