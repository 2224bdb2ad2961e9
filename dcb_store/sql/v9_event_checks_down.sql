-- Revision 0009 downgraded: the eight checks of revision 0006 again (NOT VALID, as they were).

ALTER TABLE dcb.events
    DROP CONSTRAINT events_valid,
    -- MAX_TAGS_PER_EVENT
    ADD CONSTRAINT events_tag_count CHECK (pg_catalog.cardinality(tags) <= 100) NOT VALID,
    -- a flat list of non-NULL, non-empty tags
    ADD CONSTRAINT events_tags_present CHECK (
        CASE WHEN pg_catalog.array_ndims(tags) > 1 THEN false
             ELSE pg_catalog.array_position(tags, NULL) IS NULL AND NOT tags && '{""}'::text[]
        END) NOT VALID,
    ADD CONSTRAINT events_tags_valid CHECK (dcb.tags_valid_v1(tags)) NOT VALID,
    -- metadata is an object (Event.metadata: dict or None)
    ADD CONSTRAINT events_metadata_object
        CHECK (metadata IS NULL OR pg_catalog.jsonb_typeof(metadata) = 'object') NOT VALID,
    -- MAX_DATA_BYTES / MAX_METADATA_BYTES bound the compact JSON text; jsonb takes at most
    -- about 6 times as many bytes (an array of one-digit numbers), so these bounds on the stored
    -- size admit every value within the Python limits and refuse anything far beyond them.
    ADD CONSTRAINT events_data_size CHECK (pg_catalog.pg_column_size(data) <= 8388608) NOT VALID,
    ADD CONSTRAINT events_metadata_size
        CHECK (pg_catalog.pg_column_size(metadata) <= 524288) NOT VALID,
    -- MAX_JSON_DEPTH: no container at nesting level 64 (the root is level 0), that is at most
    -- 64 nested containers. The path stops descending at that level: about 0.1 us for a small
    -- document, 20-40 us for a 10 KB one.
    ADD CONSTRAINT events_data_depth CHECK (NOT pg_catalog.jsonb_path_exists(data,
        'strict $.**{64} ? (@.type() == "array" || @.type() == "object")')) NOT VALID,
    ADD CONSTRAINT events_metadata_depth CHECK (metadata IS NULL OR NOT pg_catalog.jsonb_path_exists(
        metadata, 'strict $.**{64} ? (@.type() == "array" || @.type() == "object")')) NOT VALID;

DROP FUNCTION dcb.event_valid_v1(pg_catalog.text[], pg_catalog.jsonb, pg_catalog.jsonb);
