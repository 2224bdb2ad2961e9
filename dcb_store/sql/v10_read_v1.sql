-- dcb_store schema, version 10 (revision 0010): read_v1 sets up a one-item read in expressions.
-- Revision 0010's downgrade restores version 7's body (v7_read_v1.sql).

-- Reads: read_v1's contract (versions 6 and 7) unchanged. A read of one item (one query item,
-- the common case: a tag, an entity, a type) no longer calls check_items_v1 and
-- query_key_names_v1 nor parses its items in an aggregate: their results, for one item, come
-- from a few expressions and one statement. Other reads set up as before. A null tag or type
-- in any item is refused (22023) like the append's condition refuses it: it matched no event,
-- and under a transaction snapshot its NULL key made the probe fail on a not-null violation
-- (found by an adversarial review).
CREATE OR REPLACE FUNCTION dcb.read_v1(
    p_items jsonb,
    p_after bigint,
    p_limit integer,
    p_backwards boolean
) RETURNS TABLE (
    head bigint, "position" bigint, type text, tags text[], data jsonb, metadata jsonb,
    id uuid, recorded_at timestamptz
)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- generic plans: a custom plan per call (re-planning every statement) cost more than it saved
SET plan_cache_mode = force_generic_plan
AS $$
-- the output columns are named like the table's: inside, a bare name means the column
#variable_conflict use_column
DECLARE
    v_cap bigint;
    v_keys bigint[];
    v_head bigint;
    v_all boolean;
    v_items integer;
    v_single_tags boolean;
    v_union text[];
    v_tags text[];
    v_types text[];
    v_found bigint[] := '{}';
    v_more bigint[];
    v_after constant bigint := coalesce(p_after, 0);
    v_order constant text := CASE WHEN p_backwards THEN 'DESC' ELSE 'ASC' END;
    -- (since revision 0010: a null tag or type matches no event, and its NULL key broke the
    -- snapshot probe with a not-null violation; refused up front, as append_v5 refuses it)
    c_null_message constant text := 'a query holds at most 100 items of at most 100 types and '
                                    '100 tags each, none of them null';
BEGIN
    IF jsonb_typeof(p_items) = 'array' AND jsonb_array_length(p_items) = 1
       AND jsonb_typeof(p_items->0) = 'object' THEN
        -- One item, the common read (a tag, an entity, a type): what check_items_v1,
        -- query_key_names_v1 and the shape's aggregates below compute for it, in expressions
        -- and one statement (revision 0010: the calls and statements cost a read about 55 us).
        -- The same checks in the same order, so the same errors.
        IF jsonb_array_length(coalesce(p_items->0->'types', '[]')) > 100
           OR jsonb_array_length(coalesce(p_items->0->'tags', '[]')) > 100 THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'a query holds at most 100 items of at most 100 types and 100 tags each';
        END IF;
        SELECT ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'tags', '[]'))),
               ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'types', '[]')))
          INTO v_tags, v_types;
        IF array_position(v_tags, NULL) IS NOT NULL OR array_position(v_types, NULL) IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = c_null_message;
        END IF;
        v_items := 1;
        v_all := cardinality(v_tags) = 0 AND cardinality(v_types) = 0;
        v_single_tags := cardinality(v_tags) = 1 AND cardinality(v_types) = 0;
        v_union := ARRAY[p_items->0->'tags'->>0];
        -- the item's key: its least tag, else each of its types, else "all"
        IF cardinality(v_tags) = 1 THEN
            v_keys := ARRAY[dcb.lock_key_v2('t:' || v_tags[1])];
        ELSIF cardinality(v_tags) > 1 THEN
            v_keys := ARRAY[dcb.lock_key_v2('t:' || (SELECT min(t) FROM unnest(v_tags) t))];
        ELSIF cardinality(v_types) > 0 THEN
            v_keys := ARRAY(SELECT DISTINCT dcb.lock_key_v2('y:' || y) FROM unnest(v_types) y);
        ELSE
            v_keys := ARRAY[dcb.lock_key_v2('a:')];
        END IF;
        -- Statement 1: the cap, computed before the snapshot of every statement that follows.
        v_cap := dcb.in_flight_cap_v2(v_keys);
        -- Statement 2, a new snapshot: the head.
        SELECT max(e.position) INTO v_head FROM dcb.events e WHERE e.position <= v_cap;
    ELSE
        PERFORM dcb.check_items_v1(p_items);
        IF jsonb_path_exists(p_items, '$[*].tags[*] ? (@ == null)')
           OR jsonb_path_exists(p_items, '$[*].types[*] ? (@ == null)') THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = c_null_message;
        END IF;
        -- Statement 1: the cap, computed before the snapshot of every statement that follows.
        v_keys := ARRAY(SELECT DISTINCT dcb.lock_key_v2(n) FROM unnest(dcb.query_key_names_v1(p_items)) n);
        v_cap := dcb.in_flight_cap_v2(v_keys);
        -- Statement 2, a new snapshot: the head; and the shape of the query.
        SELECT (SELECT max(e.position) FROM dcb.events e WHERE e.position <= v_cap),
               bool_or(jsonb_array_length(coalesce(it->'tags', '[]')) = 0
                       AND jsonb_array_length(coalesce(it->'types', '[]')) = 0),
               count(*),
               -- the first item's filters, for the one-item path below
               ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'tags', '[]'))),
               ARRAY(SELECT jsonb_array_elements_text(coalesce(p_items->0->'types', '[]'))),
               -- every item one tag and no type: the union of items is the events with any of them
               bool_and(jsonb_array_length(coalesce(it->'tags', '[]')) = 1
                        AND jsonb_array_length(coalesce(it->'types', '[]')) = 0),
               array_agg(it->'tags'->>0)
          INTO v_head, v_all, v_items, v_tags, v_types, v_single_tags, v_union
          FROM jsonb_array_elements(p_items) it;
    END IF;
    -- Under a transaction snapshot these statements do not see what committed after it: a writer
    -- of the query's keys that was in flight at the snapshot and committed since, or one that
    -- started after it while this transaction appended above it, may sit below the head.
    -- Refuse (40001) rather than return a head that hides it.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM dcb.check_snapshot_v1(v_keys, v_head);
    END IF;

    IF v_all THEN
        IF p_backwards THEN
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e WHERE e.position > v_after AND e.position <= v_head
             ORDER BY e.position DESC LIMIT p_limit;
        ELSE
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e WHERE e.position > v_after AND e.position <= v_head
             ORDER BY e.position LIMIT p_limit;
        END IF;
    ELSIF v_items = 1 AND cardinality(v_tags) > 0 AND NOT dcb.tags_are_hot_v1(v_tags) THEN
        -- One tag item, the common read: the tag (GIN) index answers it, with a plan cached
        -- for the session. "+ 0" keeps the planner off the primary key, which it would walk
        -- for a position range it cannot estimate.
        RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
          FROM dcb.events e
         WHERE e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types))
           AND e.position + 0 > v_after AND e.position + 0 <= v_head
         ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
         LIMIT p_limit;
    ELSIF v_items = 1 AND cardinality(v_tags) > 0 AND cardinality(v_types) = 0 THEN
        -- One hot tag item without a type (a tenant's tag; tags_are_hot_v1 said so above):
        -- walk the primary key from `after`, with plans cached for the session ("|| '{}'"
        -- keeps the tag index out of them); planning with the values cost a caught-up
        -- follower's poll about 1 ms.
        IF p_backwards THEN
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e
             WHERE (e.tags || '{}'::text[]) @> v_tags AND e.position > v_after AND e.position <= v_head
             ORDER BY e.position DESC LIMIT p_limit;
        ELSE
            RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
              FROM dcb.events e
             WHERE (e.tags || '{}'::text[]) @> v_tags AND e.position > v_after AND e.position <= v_head
             ORDER BY e.position LIMIT p_limit;
        END IF;
    ELSIF v_items = 1 AND cardinality(v_tags) > 0 THEN
        -- One hot tag item with types (tags_are_hot_v1: on 5% of the events or more, as a
        -- tenant's tag is): the GIN index would hand over every one of its rows, unordered.
        -- Planned with the values: a walk of the primary key from `after`, or the type index
        -- when a type filter is the selective part.
        RETURN QUERY EXECUTE
            'SELECT $1, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at '
            'FROM dcb.events e WHERE e.tags @> $2 AND ($3 = ''{}'' OR e.type = ANY ($3)) '
            'AND e.position > $4 AND e.position <= $1 ORDER BY e.position ' || v_order
            || ' LIMIT $5'
          USING v_head, v_tags, v_types, v_after, p_limit;
    ELSIF v_single_tags AND v_items > 1
          AND NOT (SELECT bool_or(dcb.tags_are_hot_v1(ARRAY[t])) FROM unnest(v_union) t) THEN
        -- Items of one tag each, none hot: one scan of the tag index for all of them ("&&",
        -- any of the tags, is exactly the union of such items). A hot tag among them would
        -- bring all its rows: those reads take the per-item path below.
        RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
          FROM dcb.events e
         WHERE e.tags && v_union
           AND e.position + 0 > v_after AND e.position + 0 <= v_head
         ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
         LIMIT p_limit;
    ELSE
        -- Each item's positions (at most p_limit of them: enough for the union's first p_limit),
        -- then the events in one statement.
        FOR v_tags, v_types IN
            SELECT ARRAY(SELECT jsonb_array_elements_text(coalesce(it->'tags', '[]'))),
                   ARRAY(SELECT jsonb_array_elements_text(coalesce(it->'types', '[]')))
            FROM jsonb_array_elements(p_items) it
        LOOP
            IF cardinality(v_tags) > 0 AND dcb.tags_are_hot_v1(v_tags) THEN
                -- as for one hot tag item above
                EXECUTE 'SELECT ARRAY(SELECT e.position FROM dcb.events e '
                        'WHERE e.tags @> $1 AND ($2 = ''{}'' OR e.type = ANY ($2)) '
                        'AND e.position > $3 AND e.position <= $4 '
                        'ORDER BY e.position ' || v_order || ' LIMIT $5)'
                   INTO v_more USING v_tags, v_types, v_after, v_head, p_limit;
            ELSIF cardinality(v_tags) > 0 THEN
                -- as for one tag item above
                v_more := ARRAY(
                    SELECT e.position FROM dcb.events e
                     WHERE e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types))
                       AND e.position + 0 > v_after AND e.position + 0 <= v_head
                     ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
                     LIMIT p_limit);
            ELSE
                -- planned with the actual types: under a generic plan a type common in the
                -- statistics sends the planner down the primary key, for a rare type a full scan
                EXECUTE 'SELECT ARRAY(SELECT e.position FROM dcb.events e '
                        'WHERE e.type = ANY ($1) AND e.position > $2 AND e.position <= $3 '
                        'ORDER BY e.position ' || v_order || ' LIMIT $4)'
                   INTO v_more USING v_types, v_after, v_head, p_limit;
            END IF;
            v_found := v_found || v_more;
        END LOOP;
        RETURN QUERY SELECT v_head, e.position, e.type, e.tags, e.data, e.metadata, e.id, e.recorded_at
          FROM dcb.events e WHERE e.position = ANY (v_found)
         ORDER BY CASE WHEN p_backwards THEN -e.position ELSE e.position END
         LIMIT p_limit;
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v_head, NULL::bigint, NULL::text, NULL::text[], NULL::jsonb, NULL::jsonb,
                            NULL::uuid, NULL::timestamptz;
    END IF;
END
$$;
