-- dcb_store schema, version 8 (revision 0008): the hot-tag list shared by the store's sessions.
--
-- Version 6 kept the list in a session setting, refreshed from pg_stats once a minute. A setting
-- changed inside a transaction that rolls back is rolled back too, and most reads run in
-- transactions that end in a rollback (a Session closed without commit): such a session read
-- pg_stats on every call, about 0.3 ms (the cast and filter of up to 1,000 most common
-- elements), a third of a one-tag read. The list now also lives in a one-row table, keyed by the
-- time dcb.events was last analyzed (the list is a function of the statistics, which change only
-- then) and written by appends (which usually commit); a session reads that row (microseconds)
-- when its own setting is stale or gone.

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

-- Are all these tags hot: on at least 5% of the events, by the table's statistics (the most
-- common elements of dcb.events.tags)? A lookup of hot tags walks the primary key from `after`
-- (a page needs a few hundred rows); any other goes through the tag (GIN) index, which finds a
-- rare tag's rows at once but a hot tag's only all together, unordered. The answer changes
-- plans, never results: a session that sets dcb.hot_tags itself changes only its own plans.
-- The list is the one of the current statistics (the time dcb.events was last analyzed is
-- its key): the session setting if it holds that key, else the shared row if it does, else
-- pg_stats. Without a key (never analyzed, statistics reset, a standby, whose statistics
-- timestamps are its own) the session setting is trusted for a minute. Readers never write
-- (their transactions may be read-only, on a standby, or under a snapshot): appends do
-- (refresh_hot_tags_v1). The setting is "<epoch checked>|<key>|<tags joined by U+001F>",
-- parsed so that no value a session may set makes it fail (a regular expression, then
-- string_to_array): any other value counts as unset, and a forged list changes plans only.
CREATE OR REPLACE FUNCTION dcb.tags_are_hot_v1(p_tags text[]) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cached text := coalesce(current_setting('dcb.hot_tags', true), '');
    v_now bigint := extract(epoch FROM clock_timestamp())::bigint;
    v_analyzed timestamptz := dcb.events_analyzed_at_v1();
    v_key text := coalesce((extract(epoch FROM v_analyzed) * 1000000)::bigint::text, '');
    v_head text := split_part(v_cached, '|', 1);
    v_rest text := substr(v_cached, strpos(v_cached, '|') + 1);
    v_row_analyzed timestamptz;
    v_hot text[];
BEGIN
    -- (a regular expression match, then the cast: a substring() with a capture group cost 4 us)
    IF (CASE WHEN strpos(v_cached, '|') > 0 AND v_head ~ '^[0-9]{1,15}$'
             THEN split_part(v_rest, '|', 1) = v_key AND (v_key <> '' OR v_head::bigint >= v_now - 60)
             ELSE false END) THEN
        v_hot := string_to_array(substr(v_rest, strpos(v_rest, '|') + 1), chr(31));
    ELSE
        SELECT h.analyzed_at, h.tags INTO v_row_analyzed, v_hot FROM dcb.hot_tags h WHERE h.id = 1;
        IF v_analyzed IS NULL OR v_row_analyzed IS DISTINCT FROM v_analyzed THEN
            v_hot := dcb.hot_tags_from_statistics_v1();
        END IF;
        PERFORM set_config('dcb.hot_tags',
                           v_now || '|' || v_key || '|' || array_to_string(v_hot, chr(31)), false);
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
REVOKE ALL ON FUNCTION dcb.events_analyzed_at_v1() FROM PUBLIC;
REVOKE ALL ON FUNCTION dcb.hot_tags_from_statistics_v1() FROM PUBLIC;
REVOKE ALL ON FUNCTION dcb.refresh_hot_tags_v1() FROM PUBLIC;
