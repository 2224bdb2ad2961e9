-- dcb_store schema, version 9: the snapshot probe bounds "what this transaction has seen from
-- others" by the lowest in-flight marker it holds, instead of trusting the session setting
-- dcb.in_flight_marker (found by an adversarial review: a session that set it
-- above its own events made its own REPEATABLE READ decisions and reads skip the probe of the
-- positions in between, and commit over a writer they could not see). Same signature and
-- contract; the downgrade restores revision 0006's body.

CREATE OR REPLACE FUNCTION dcb.check_snapshot_v1(p_keys bigint[], p_upto bigint) RETURNS void
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
