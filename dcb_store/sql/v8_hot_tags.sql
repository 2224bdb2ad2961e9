-- dcb_store schema, version 8 (revision 0008): the hot-tag list shared by the store's sessions.
--
-- Version 6 kept the list in a session setting, refreshed from pg_stats once a minute. A setting
-- changed inside a transaction that rolls back is rolled back too, and most reads run in
-- transactions that end in a rollback (a Session closed without commit): such a session read
-- pg_stats on every call, about 0.3 ms (the cast and filter of up to 1,000 most common
-- elements), a third of a one-tag read. The list now also lives in a one-row table, refreshed by
-- appends (which usually commit); a session reads that row (microseconds) when its own setting
-- is stale or gone.

-- The store's hot tags as last computed (epoch seconds) from the statistics of dcb.events.tags.
-- Only the store's functions read and write it (no privilege is granted on it).
CREATE TABLE dcb.hot_tags (
    id          integer PRIMARY KEY CHECK (id = 1),
    computed_at bigint NOT NULL,
    tags        text[] NOT NULL
);

-- Are all these tags hot: on at least 5% of the events, by the table's statistics (the most
-- common elements of dcb.events.tags)? A lookup of hot tags walks the primary key from `after`
-- (a page needs a few hundred rows); any other goes through the tag (GIN) index, which finds a
-- rare tag's rows at once but a hot tag's only all together, unordered. The answer changes
-- plans, never results: a session that sets dcb.hot_tags itself changes only its own plans.
-- The list: the session setting if under a minute old, else the shared row if under ten
-- minutes old (appends refresh it every minute: refresh_hot_tags_v1), else pg_stats. Readers
-- never write (their transactions may be read-only, on a standby, or under a snapshot).
CREATE OR REPLACE FUNCTION dcb.tags_are_hot_v1(p_tags text[]) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cached text := coalesce(current_setting('dcb.hot_tags', true), '');
    v_now bigint := extract(epoch FROM clock_timestamp())::bigint;
    v_at bigint;
    v_hot text[];
BEGIN
    IF v_cached <> '' AND split_part(v_cached, '|', 1)::bigint >= v_now - 60 THEN
        v_hot := substr(v_cached, strpos(v_cached, '|') + 1)::text[];
    ELSE
        SELECT h.computed_at, h.tags INTO v_at, v_hot FROM dcb.hot_tags h WHERE h.id = 1;
        IF v_at IS NULL OR v_at < v_now - 600 THEN
            v_hot := dcb.hot_tags_from_statistics_v1();
        END IF;
        PERFORM set_config('dcb.hot_tags', v_now || '|' || v_hot::text, false);
    END IF;
    RETURN cardinality(p_tags) > 0 AND p_tags <@ v_hot;
END
$$;

-- The tags on at least 5% of the events, by pg_stats: about 0.3 ms (the cast and filter of up
-- to 1,000 most common elements), so the list is shared (dcb.hot_tags) and cached per session.
CREATE FUNCTION dcb.hot_tags_from_statistics_v1() RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(m.e), '{}')
      FROM pg_stats s,
           unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS m(e, f)
     WHERE s.schemaname = 'dcb' AND s.tablename = 'events' AND s.attname = 'tags'
       AND m.f >= 0.05 AND m.e IS NOT NULL
$$;

-- Called by append_v5 when its session's list is over a minute old (an append usually commits,
-- so what it writes is kept; a read usually rolls back). Computes the list again if the shared
-- row is over a minute old, and writes it back only at READ COMMITTED (a write under a
-- transaction snapshot could make the caller's transaction fail to serialize) and by one session
-- at a time (0xDF, 2, tried without waiting: a session that holds that key long only leaves the
-- row older). Either way the session's setting gets the list.
CREATE FUNCTION dcb.refresh_hot_tags_v1() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now bigint := extract(epoch FROM clock_timestamp())::bigint;
    v_at bigint;
    v_hot text[];
BEGIN
    SELECT h.computed_at, h.tags INTO v_at, v_hot FROM dcb.hot_tags h WHERE h.id = 1;
    IF v_at IS NULL OR v_at < v_now - 60 THEN
        v_hot := dcb.hot_tags_from_statistics_v1();
        IF current_setting('transaction_isolation') = 'read committed'
           AND pg_try_advisory_xact_lock(-553648128, 2) THEN
            INSERT INTO dcb.hot_tags AS h (id, computed_at, tags) VALUES (1, v_now, v_hot)
            ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at, tags = excluded.tags;
        END IF;
    END IF;
    PERFORM set_config('dcb.hot_tags', v_now || '|' || v_hot::text, false);
END
$$;
REVOKE ALL ON FUNCTION dcb.hot_tags_from_statistics_v1() FROM PUBLIC;
REVOKE ALL ON FUNCTION dcb.refresh_hot_tags_v1() FROM PUBLIC;
