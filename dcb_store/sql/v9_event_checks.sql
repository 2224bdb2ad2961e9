-- dcb_store schema, version 9: the events table's eight checks of revision 0006 as one.
--
-- PostgreSQL prepares every CHECK expression of a table again for each INSERT statement (it
-- reads the stored expression, plans it and builds its executor state), and an append is one
-- statement: the eight checks cost about 45 us of every append, a third of a plain INSERT's
-- server time, whatever the events hold. One CHECK calling a PL/pgSQL function prepares one
-- call instead, and the function's own expressions stay planned for the session: about 15 us.
-- The rules are the same, row for row (tests/test_event_checks.py compares them); the error
-- names the rule that failed. events_type_check (declared with the table, validated) stays.

-- Whether an event may be stored: true, or a check_violation naming the rule it breaks. Every
-- operator and function is schema-qualified and the type names are pg_catalog's: no
-- search_path can change what it runs, so it needs no SET clause (which would cost a settings
-- save and restore per row). Not STRICT: metadata is often NULL.
CREATE FUNCTION dcb.event_valid_v1(
    p_tags pg_catalog.text[],
    p_data pg_catalog.jsonb,
    p_metadata pg_catalog.jsonb
) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_tag pg_catalog.text;
    v_rule pg_catalog.text;
BEGIN
    IF pg_catalog.cardinality(p_tags) OPERATOR(pg_catalog.>) 100 THEN
        v_rule := 'at most 100 tags (MAX_TAGS_PER_EVENT)';
    ELSIF pg_catalog.array_ndims(p_tags) OPERATOR(pg_catalog.>) 1 THEN
        v_rule := 'tags are a flat list';
    ELSIF p_metadata IS NOT NULL
          AND pg_catalog.jsonb_typeof(p_metadata) OPERATOR(pg_catalog.<>) 'object' THEN
        v_rule := 'metadata is a JSON object or NULL';
    -- MAX_DATA_BYTES / MAX_METADATA_BYTES bound the compact JSON text; jsonb takes at most
    -- about 6 times as many bytes (an array of one-digit numbers), so these bounds on the
    -- stored size admit every value within the Python limits and refuse anything far beyond.
    ELSIF pg_catalog.pg_column_size(p_data) OPERATOR(pg_catalog.>) 8388608 THEN
        v_rule := 'data takes at most 8388608 bytes';
    ELSIF pg_catalog.pg_column_size(p_metadata) OPERATOR(pg_catalog.>) 524288 THEN
        v_rule := 'metadata takes at most 524288 bytes';
    -- MAX_JSON_DEPTH: no container at nesting level 64 (the root is level 0). The path stops
    -- descending at that level: about 0.1 us for a small document, 20-40 us for a 10 KB one.
    ELSIF pg_catalog.jsonb_path_exists(p_data,
              'strict $.**{64} ? (@.type() == "array" || @.type() == "object")') THEN
        v_rule := 'data nests at most 64 containers (MAX_JSON_DEPTH)';
    ELSIF pg_catalog.jsonb_path_exists(p_metadata,
              'strict $.**{64} ? (@.type() == "array" || @.type() == "object")') THEN
        v_rule := 'metadata nests at most 64 containers (MAX_JSON_DEPTH)';
    ELSE
        -- each tag: present, not empty, at most MAX_TAG_LENGTH characters, no 'lock:' prefix
        -- (an instruction to append, never stored)
        FOREACH v_tag IN ARRAY p_tags LOOP
            IF v_tag IS NULL OR v_tag OPERATOR(pg_catalog.=) '' THEN
                v_rule := 'tags are not NULL or empty';
            ELSIF pg_catalog.length(v_tag) OPERATOR(pg_catalog.>) 1024 THEN
                v_rule := 'a tag holds at most 1024 characters (MAX_TAG_LENGTH)';
            ELSIF pg_catalog.starts_with(v_tag, 'lock:') THEN
                v_rule := 'no stored tag starts with "lock:"';
            END IF;
            EXIT WHEN v_rule IS NOT NULL;
        END LOOP;
        IF v_rule IS NULL THEN
            RETURN true;
        END IF;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'check_violation', TABLE = 'events',
        CONSTRAINT = 'events_valid',
        MESSAGE = 'new row for relation "events" violates check constraint "events_valid"',
        DETAIL = v_rule;
END
$$;

-- NOT VALID, as the checks it replaces: rows stored before revision 0006 are not checked
-- (readers report such a row as UnreadableEventError with its position); every new or updated
-- row is. An operator may check the old rows with
-- ALTER TABLE dcb.events VALIDATE CONSTRAINT events_valid (it reads the whole table, without
-- blocking appends or reads); one who had validated the old checks does so again.
ALTER TABLE dcb.events
    DROP CONSTRAINT events_tag_count,
    DROP CONSTRAINT events_tags_present,
    DROP CONSTRAINT events_tags_valid,
    DROP CONSTRAINT events_metadata_object,
    DROP CONSTRAINT events_data_size,
    DROP CONSTRAINT events_metadata_size,
    DROP CONSTRAINT events_data_depth,
    DROP CONSTRAINT events_metadata_depth,
    ADD CONSTRAINT events_valid CHECK (dcb.event_valid_v1(tags, data, metadata)) NOT VALID;

REVOKE ALL ON FUNCTION dcb.event_valid_v1(pg_catalog.text[], pg_catalog.jsonb, pg_catalog.jsonb)
    FROM PUBLIC;
