-- dcb_store schema, version 10 (revision 0010): append_v3 and append_v4, which stay for code of
-- earlier releases, take the in-flight marker at every append, as append_v5 does since revision
-- 0009. They skipped it when the session setting dcb.in_flight_marker named the transaction,
-- whatever marker it gave; a writer role that set it by hand appended without a marker, so
-- readers' heads passed its events and the snapshot probe of its own later decisions started
-- above them (found by an adversarial review). Only the marker block of each body changes;
-- revision 0010's downgrade restores the bodies of v6_conditions.sql and v7_append.sql.

CREATE OR REPLACE FUNCTION dcb.append_v3(
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

CREATE OR REPLACE FUNCTION dcb.append_v4(
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
