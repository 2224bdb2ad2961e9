-- Revision 0008 down: the hot-tag list back in the session setting alone (version 6's body).
CREATE OR REPLACE FUNCTION dcb.tags_are_hot_v1(p_tags text[]) RETURNS boolean
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
DROP FUNCTION dcb.refresh_hot_tags_v1();
DROP FUNCTION dcb.hot_tags_from_statistics_v1();
DROP FUNCTION dcb.events_analyzed_at_v1();
DROP TABLE dcb.hot_tags;
