-- dcb_store schema, version 6: conditions that hold at every isolation level.
--
-- Up to version 5 a condition was checked after the advisory locks in the statement's snapshot:
-- exact at READ COMMITTED (each statement takes a new snapshot), stale at REPEATABLE READ and
-- SERIALIZABLE, where the transaction's snapshot may predate a matching commit. Key clocks
-- (rows bumped by conditional appends) caught some of that, missed plain writers, type-only and
-- match-all conditions, and made unrelated writers of a shared tag wait for each other.
--
-- Version 6 replaces the clocks with WRITE TRACES and a PROBE (docs/consistency.md):
--   * every append, plain or not, records one row per key it writes (each tag, its types, "all")
--     per transaction: (its transaction id, the key, the first position of the append). Rows
--     of different transactions never collide, so writers never wait for each other.
--   * a conditional append under a transaction snapshot (REPEATABLE READ, SERIALIZABLE), after
--     its locks and its check, tries to insert the rows a writer it cannot see would have left:
--     (x, key) for every transaction x in flight at its snapshot that has committed since, and
--     (key, p) for every position p above the highest position its snapshot sees. A unique index
--     that finds a committed row invisible to the snapshot raises a serialization failure: that
--     writer wrote one of the condition's keys after the decision's snapshot. The probe rows are
--     always rolled back. At READ COMMITTED nothing is probed: the check's snapshot is fresh.

-- The lock key of a key name: 't:<tag>', 'y:<event type>', 'a:' (all events), 'g:' (global),
-- 'i:<event id>'. The same values as lock_key_v1, so appends of either version collide during a
-- deploy; no settings consulted (v1's test-only hash-width knob is gone) and every operator is
-- schema-qualified, so the function needs no search_path and PostgreSQL can inline it.
CREATE FUNCTION dcb.lock_key_v2(p_name text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (pg_catalog.hashtextextended(p_name, 1145258579)
            OPERATOR(pg_catalog.&) '72057594037927935'::bigint)
           OPERATOR(pg_catalog.|) '-2594073385365405696'::bigint
$$;

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
-- rows of transactions far older than every running one; this sequence (non-transactional, so a
-- decider reads its current value whatever its snapshot) holds the xid below which rows may be
-- gone. A decision whose snapshot is older refuses rather than trust a pruned trace.
CREATE SEQUENCE dcb.trace_horizon_seq AS bigint MINVALUE 0 START 0 CACHE 1;

-- Refuse a query (JSON array of items) beyond dcb_store.limits, for callers that bypass Python:
-- MAX_QUERY_ITEMS items, MAX_TYPES_PER_ITEM types and MAX_TAGS_PER_ITEM tags per item. Such a
-- request would otherwise cost seconds on a large store (one index scan per item and type).
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

-- Refuse (serialization failure) when a writer invisible to this transaction's snapshot wrote
-- one of p_keys: the probe described at the top. Cheap when nothing was committed since the
-- snapshot; bounded otherwise (a snapshot too far behind refuses instead of probing).
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
    v_marker text := coalesce(current_setting('dcb.in_flight_marker', true), '');
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
    IF split_part(v_marker, ':', 1) = coalesce(pg_current_xact_id_if_assigned()::text, '-') THEN
        SELECT coalesce(max(e.position), 0) INTO v_seen FROM dcb.events e
         WHERE e.position < split_part(v_marker, ':', 2)::bigint;
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
-- SKIP LOCKED: two pruners never wait for each other.
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

-- Are all these tags hot: on at least 5% of the events, by the table's statistics (the most
-- common elements of dcb.events.tags)? A lookup of hot tags walks the primary key from `after`
-- (a page needs a few hundred rows); any other goes through the tag (GIN) index, which finds a
-- rare tag's rows at once but a hot tag's only all together, unordered. The list is read from
-- pg_stats at most once a minute per session and kept in a session setting (a session that
-- sets it itself changes only its own plans, never an answer).
CREATE FUNCTION dcb.tags_are_hot_v1(p_tags text[]) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cached text := coalesce(current_setting('dcb.hot_tags', true), '');
    v_now bigint := extract(epoch FROM clock_timestamp())::bigint;
    v_hot text[];
BEGIN
    IF v_cached = '' OR split_part(v_cached, '|', 1)::bigint < v_now - 60 THEN
        SELECT coalesce(array_agg(m.e), '{}') INTO v_hot
          FROM pg_stats s,
               unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS m(e, f)
         WHERE s.schemaname = 'dcb' AND s.tablename = 'events' AND s.attname = 'tags'
           AND m.f >= 0.05;
        PERFORM set_config('dcb.hot_tags', v_now || '|' || v_hot::text, false);
    ELSE
        v_hot := substr(v_cached, strpos(v_cached, '|') + 1)::text[];
    END IF;
    RETURN cardinality(p_tags) > 0 AND p_tags <@ v_hot;
END
$$;

-- Insert a batch (append_v3's p_events), in order; its first and last positions. PL/pgSQL, not
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

-- Append a batch, in one round trip. Version 3 of the append: the lock plan and outcomes of
-- version 2, plus write traces for every append, the snapshot probe for conditional appends
-- under a transaction snapshot, event-id keys (concurrent re-submissions of one batch wait for
-- each other instead of failing on the unique index), and a detail naming what a lock timeout
-- waited for. Outcomes (never raised, so the caller's transaction stays usable):
--   00000 stored (or replayed); DCB01 condition failed; DCB04 id stored by another batch;
--   55P03 lock timeout (detail: the keys held by others); 40001 stale snapshot.
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
        -- The in-flight marker, once per transaction: a lower bound of every position this
        -- transaction will take, held until it ends, so readers never report a head above it.
        -- The setting records which transaction took it: a session-level SET cannot skip it.
        IF split_part(coalesce(current_setting('dcb.in_flight_marker', true), ''), ':', 1)
           <> v_xid::text THEN
            PERFORM set_config('dcb.in_flight_marker',
                               v_xid::text || ':' || (m & 72057594037927935)::text, true),
                    pg_advisory_xact_lock_shared((m >> 32)::bit(32)::int, m::bit(32)::int)::text
            FROM (SELECT ((CASE WHEN is_called THEN last_value + 1 ELSE last_value END)
                          & 72057594037927935) | (-2522015791327477760) AS m
                  FROM dcb.events_position_seq) seq;
        END IF;

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

-- Is this role one of the store's own: may it append (EXECUTE on append_v3), directly, by
-- inheritance, or by SET ROLE to a role that may (membership without INHERIT)? Advisory locks
-- have no privileges: any role that can connect can take any key. Safe heads and followers
-- count only the locks of sessions whose LOGIN role is a store role, so a foreign role cannot
-- blind a read with a fake in-flight marker; append_v3 refuses a session whose login role is
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
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(bool_or(dcb.is_store_role_v1(a.usesysid)), false)
    FROM pg_stat_get_activity(p_pid) a
$$;

-- The same for a lock holder as pg_locks shows it: a backend (pid), or a prepared transaction
-- (no pid; virtualtransaction '-1/<xid>'), whose owner must be a store role. A prepared
-- transaction keeps its in-flight marker until COMMIT PREPARED: ignoring it would let a read's
-- head pass its events.
CREATE FUNCTION dcb.is_store_holder_v1(p_pid integer, p_vxid text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_pid IS NOT NULL THEN dcb.is_store_session_v1(p_pid)
           ELSE coalesce((SELECT bool_or(dcb.is_store_role_v1(r.oid))
                          FROM pg_prepared_xacts x JOIN pg_roles r ON r.rolname = x.owner
                          WHERE '-1/' || x.transaction::text = p_vxid), false)
           END
$$;

-- The in-flight cap (in_flight_cap_v1's contract, docs/consistency.md "Safe heads"), counting
-- only the markers and keys of the store's own sessions.
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

-- How many other sessions of the store hold an in-flight marker (appends not yet ended), plus
-- one if a foreign session holds the notify key (it silences notifications: followers must
-- poll as if appends were in flight).
CREATE FUNCTION dcb.appends_in_flight_v2() RETURNS integer
LANGUAGE sql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (count(DISTINCT l.virtualtransaction)
                FILTER (WHERE (l.classid::bigint >> 24) = 221
                          AND dcb.is_store_holder_v1(l.pid, l.virtualtransaction))
            + count(*) FILTER (WHERE l.classid::bigint = 3724541952 AND l.objid = 0 AND l.granted
                                 AND NOT dcb.is_store_holder_v1(l.pid, l.virtualtransaction)))::integer
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid IS DISTINCT FROM pg_backend_pid()
      AND (l.classid::bigint >> 24) IN (221, 222)
$$;


-- Version 2 of the append becomes a wrapper over version 3, so that application code still
-- calling it during a deploy leaves write traces too (a decision made at REPEATABLE READ by new
-- code must see old code's writers).
CREATE OR REPLACE FUNCTION dcb.append_v2(
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

-- read_v1's version 6 body: v6_read_v1.sql (revision 0006 loads it next).

-- Writers append only through append_v3, which runs as the schema's owner: a role granted
-- direct writes by an earlier version (or by hand) loses them, so positions, recorded_at, ids
-- and the write traces cannot be forged or skipped. Grantees are read from the ACLs (0 is PUBLIC).
DO $$
DECLARE
    v_grantee oid;
BEGIN
    FOR v_grantee IN
        SELECT DISTINCT a.grantee
        FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a
        WHERE c.relnamespace = 'dcb'::regnamespace
          AND c.relname IN ('events', 'key_clocks', 'events_position_seq', 'append_traces')
          AND a.grantee <> c.relowner
          AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'USAGE')
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON dcb.events, dcb.key_clocks, '
                       'dcb.append_traces FROM %s',
                       CASE WHEN v_grantee = 0 THEN 'PUBLIC' ELSE quote_ident(v_grantee::regrole::text) END);
        EXECUTE format('REVOKE USAGE, UPDATE ON SEQUENCE dcb.events_position_seq FROM %s',
                       CASE WHEN v_grantee = 0 THEN 'PUBLIC' ELSE quote_ident(v_grantee::regrole::text) END);
    END LOOP;
END
$$;
