-- dcb_store schema, version 11: append_v5's body takes the usual append's locks without a plan.
--
-- The protocol of revision 0008 (keys, modes, traces, probe, outcomes) and the marker of
-- revision 0009 unchanged; the body is replaced, so code of any revision since 0008 calls the
-- same append_v5.
--   * An append of one event without an id and without lock: tags (what nearly every append
--     is) tries its locks one by one, each only if it is free at once: the condition's keys
--     exclusive, then what the event writes and the global key shared. A try never waits, so
--     the order cannot deadlock; the first key that is not free undoes them all (the
--     rollback of a subtransaction) and the append takes revision 0009's sorted plan, which
--     waits in key order. The keys and modes held in the end are the plan's (a key the
--     condition takes exclusive is not also taken shared). The plan's statement (a sort, an
--     aggregate and six unions) cost about 45 us of the append; this path about 15.
--   * Whether a condition's tags are hot (which picks the check's plan, never its answer) is
--     read from the session's cached list inline (cached_hot_tags_v1, v11_hot_tags.sql), and
--     tags_are_hot_v1 called only when the cache does not hold: about 10 us less.
-- Everything else is revision 0009's body (v9_append.sql).

CREATE OR REPLACE FUNCTION dcb.append_v5(
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
