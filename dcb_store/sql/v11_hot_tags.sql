-- dcb_store schema, version 11: a session's cached hot-tag list read without a function call.
--
-- append_v5 asks, for each tag condition, whether the tags are hot (the answer picks the plan
-- of the check, never its result). Asking tags_are_hot_v1 cost a conditional append about
-- 16 us (a PL/pgSQL call with a SET clause, its declarations set up again in every
-- transaction), though the answer nearly always comes from the session's cache. The cache is
-- now read by cached_hot_tags_v1, a one-expression SQL function that PostgreSQL inlines into
-- its caller's expression; append_v5 calls tags_are_hot_v1 only when the cache does not hold
-- (about 10 us less per conditional append, measured in pairs). tags_are_hot_v1 reads the
-- cache through it too (5 us less per call, reads included), so the setting's format is
-- parsed in one place. Same answers, same setting.

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

-- Are all these tags hot? Same contract and answers as revision 0008's body (v8_hot_tags.sql,
-- where the list, its cache and its shared row are described); the cache is read through
-- cached_hot_tags_v1.
CREATE OR REPLACE FUNCTION dcb.tags_are_hot_v1(p_tags text[]) RETURNS boolean
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA dcb FROM PUBLIC;
