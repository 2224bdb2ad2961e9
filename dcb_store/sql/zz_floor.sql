
CREATE OR REPLACE FUNCTION dcb.append_v5(
    p_events jsonb, p_locks text[], p_condition jsonb, p_lock_timeout_ms integer,
    OUT outcome text, OUT last_position bigint, OUT conflict_position bigint,
    OUT lock_wait_ms double precision, OUT detail text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    INSERT INTO dcb.events (type, tags, data, metadata)
    VALUES (p_events->0->>'type', ARRAY(SELECT jsonb_array_elements_text(p_events->0->'tags')),
            p_events->0->'data', nullif(p_events->0->'metadata', 'null'::jsonb))
    RETURNING position INTO last_position;
    outcome := '00000';
    lock_wait_ms := 0;
END
$$;
