-- Revert v4_append_v2.sql (revision 0004): append_v1 gets its version 1 body back, then
-- append_v2 goes. The function below is a copy of append_v1 as revision 0001 created it
-- (v1_functions.sql): a downgrade states what it restores rather than cutting it out of another
-- file. DROP and CREATE rather than CREATE OR REPLACE, as this downgrade always did: the
-- function comes back as revision 0001 made it, with PostgreSQL's default privileges.

DROP FUNCTION dcb.append_v1(jsonb, text[], jsonb, integer);

-- Append a batch, in one round trip: take the advisory locks, check the condition, record the
-- keys' clocks, insert. It never raises for an expected outcome (a failed condition, a lock
-- timeout, a stale snapshot, a duplicate id): it returns the SQLSTATE it stands for, so that the
-- caller's transaction stays usable, and releases every lock it took for a failed append.
--   p_events:  [{"type": t, "tags": [stored tags], "data": d, "metadata": m|null, "id": uuid|null}]
--   p_locks:   keys named by lock: tags (stored form), locked exclusively
--   p_condition: null, or {"items": [{"types": [...], "tags": [...]}, ...], "after": n|null}
--   p_lock_timeout_ms: null to keep the session's lock_timeout
-- Returns one row: outcome ('00000' or a SQLSTATE), last_position, conflict_position.
CREATE FUNCTION dcb.append_v1(
    p_events jsonb,
    p_locks text[],
    p_condition jsonb,
    p_lock_timeout_ms integer
) RETURNS TABLE (outcome text, last_position bigint, conflict_position bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
-- generic plans: a custom plan per call (re-planning every statement) cost more than it saved
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    -- Each statement of a PL/pgSQL function costs tens of microseconds: the work below is
    -- packed into as few statements as reads clearly.
    c_max_keys constant integer := 256;
    v_participant boolean := p_condition IS NOT NULL OR cardinality(p_locks) > 0;
    v_after bigint := coalesce((p_condition->>'after')::bigint, 0);
    v_tag_names text[];
    v_write_names text[];
    v_cond_names text[] := '{}';
    v_ids uuid[];
    v_stored uuid[];
    v_keys bigint[];
    v_excl boolean[];
    v_old_timeout text;
    v_conflict bigint;
    v_pos bigint;
    v_item jsonb;
    v_tags text[];
    v_types text[];
    v_last bigint;
    v_detail text;
    v_state text;
BEGIN
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
    IF p_condition IS NOT NULL THEN
        v_cond_names := dcb.query_key_names_v1(p_condition->'items');
    END IF;

    -- The lock plan, in one global key order (no deadlock between appends): exclusive for
    -- what the condition reads and for lock: tags, shared for what the events write. Over
    -- budget, the write and lock keys collapse into the global key taken exclusively (every
    -- conditional or locking append holds it shared) and a condition into the "all" key.
    WITH wanted AS (
        SELECT n, true AS x FROM unnest(v_cond_names) n
        UNION ALL SELECT 't:' || l, true FROM unnest(p_locks) l
        UNION ALL SELECT n, false FROM unnest(v_write_names) n
        UNION ALL SELECT 'g:', false WHERE v_participant
    ), sized AS (
        SELECT count(DISTINCT n) > c_max_keys AS coarse FROM wanted
    ), planned AS (
        SELECT dcb.lock_key_v1(w.n) AS k, w.x FROM wanted w, sized WHERE NOT sized.coarse
        UNION ALL
        SELECT dcb.lock_key_v1(n), true
        FROM unnest(CASE WHEN cardinality(v_cond_names) > c_max_keys THEN '{a:}' ELSE v_cond_names END || '{g:}'::text[]) n,
             sized
        WHERE sized.coarse
    )
    SELECT array_agg(k ORDER BY k), array_agg(x ORDER BY k) INTO v_keys, v_excl
    FROM (SELECT k, bool_or(x) AS x FROM planned GROUP BY k) s;

    BEGIN  -- a subtransaction: a failed append releases the locks it took
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- restored below; on an error the subtransaction's rollback restores it
            SELECT current_setting('lock_timeout'), set_config('lock_timeout', p_lock_timeout_ms || 'ms', true)
              INTO v_old_timeout, v_detail;
        END IF;
        PERFORM count(CASE WHEN x THEN pg_advisory_xact_lock((k >> 32)::bit(32)::int, k::bit(32)::int)::text
                           ELSE pg_advisory_xact_lock_shared((k >> 32)::bit(32)::int, k::bit(32)::int)::text END)
        FROM (SELECT k, x FROM unnest(v_keys, v_excl) WITH ORDINALITY AS u(k, x, i) ORDER BY i) ordered;

        -- The in-flight marker, once per transaction: a lower bound of every position this
        -- transaction will take, held until it ends, so readers never report a head above it.
        IF coalesce(current_setting('dcb.in_flight_marker', true), '') = '' THEN
            PERFORM set_config('dcb.in_flight_marker', m::text, true),
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
                -- "+ 0" keeps the planner off the primary key (a min() walk or a range scan):
                -- the tag (GIN) or type index is the selective one
                IF cardinality(v_tags) > 0 THEN
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
        END IF;

        -- Conditional and locking appends bump the clocks of the keys they check and write.
        -- Under a transaction snapshot the bump fails with a serialization failure when another
        -- such append bumped one of them after our snapshot was taken: our check may be stale.
        -- Plain appends skip it, so plain writers of one tag never wait for each other.
        IF v_participant THEN
            INSERT INTO dcb.key_clocks AS c (key)
            SELECT DISTINCT k FROM unnest(v_tag_names || v_cond_names) k ORDER BY k
            ON CONFLICT (key) DO UPDATE SET version = c.version + 1;
        END IF;
        IF p_lock_timeout_ms IS NOT NULL THEN
            -- the caller's later statements keep the lock_timeout they had
            PERFORM set_config('lock_timeout', v_old_timeout, true);
        END IF;
    EXCEPTION
        WHEN lock_not_available THEN
            RETURN QUERY SELECT '55P03'::text, NULL::bigint, NULL::bigint;
            RETURN;
        WHEN SQLSTATE 'DCB05' THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
            RETURN QUERY SELECT '00000'::text, v_detail::bigint, NULL::bigint;
            RETURN;
        WHEN SQLSTATE 'DCB01' OR SQLSTATE 'DCB04' THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL, v_state = RETURNED_SQLSTATE;
            RETURN QUERY SELECT v_state, NULL::bigint, v_detail::bigint;
            RETURN;
        WHEN serialization_failure THEN
            RETURN QUERY SELECT '40001'::text, NULL::bigint, NULL::bigint;
            RETURN;
    END;

    WITH ins AS (
        INSERT INTO dcb.events (type, tags, data, metadata, id)
        SELECT x.e->>'type',
               ARRAY(SELECT jsonb_array_elements_text(x.e->'tags')),
               x.e->'data',
               nullif(x.e->'metadata', 'null'::jsonb),
               (x.e->>'id')::uuid
        FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, n)
        ORDER BY x.n
        RETURNING position
    )
    SELECT max(position) INTO v_last FROM ins;
    RETURN QUERY SELECT '00000'::text, v_last, NULL::bigint;
END
$$;

DROP FUNCTION dcb.append_v2(jsonb, text[], jsonb, integer);
