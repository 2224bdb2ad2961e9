-- dcb_store schema, version 6: a store that holds in a database shared with roles it does not
-- trust. Runs after v6_conditions.sql (revision 0006).
--
--   * the events table refuses what an Event cannot hold, also from writers that bypass Python
--     (dcb_store.limits documents the same limits, enforced when events are built);
--   * no function of the schema is executable by PUBLIC: dcb_store.roles grants each role
--     what it needs;
--   * the erasure switch holds for the one transaction that set it.

-- Tags of a stored event: no 'lock:' prefix (an instruction to append, never stored) and at
-- most 1024 characters each (MAX_TAG_LENGTH). Every operator and function is schema-qualified
-- and the type names are pg_catalog's: no search_path can change what it runs. About 1 us per
-- event of two tags.
CREATE FUNCTION dcb.tags_valid_v1(p_tags pg_catalog.text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
AS $$
DECLARE
    v_tag pg_catalog.text;
BEGIN
    FOREACH v_tag IN ARRAY p_tags LOOP
        IF pg_catalog.length(v_tag) OPERATOR(pg_catalog.>) 1024
           OR pg_catalog.starts_with(v_tag, 'lock:') THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- NOT VALID: rows stored before this revision are not checked (readers report such a row as
-- UnreadableEventError with its position); every new or updated row is. An operator may check
-- the old rows later with ALTER TABLE dcb.events VALIDATE CONSTRAINT <name> (it reads the
-- whole table, without blocking appends or reads).
ALTER TABLE dcb.events
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

-- The erasure switch. Up to version 5 the trigger accepted any 'on' value of dcb.allow_erasure,
-- which a session-level SET, ALTER ROLE ... SET or a connection option also supply, so that
-- every later transaction of the session or role could rewrite history. Now the setting must
-- name the current transaction: dcb.allow_erasure_v1() sets it so, transaction-locally.
CREATE FUNCTION dcb.allow_erasure_v1() RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT set_config('dcb.allow_erasure', pg_current_xact_id()::text, true);
$$;

CREATE FUNCTION dcb.reject_history_change_v2() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(current_setting('dcb.allow_erasure', true), '') = pg_current_xact_id()::text THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'DCB10',
        MESSAGE = format('dcb.events is append-only: %s is rejected', TG_OP),
        HINT = 'for a deliberate erasure, SELECT dcb.allow_erasure_v1() in that transaction';
END
$$;

DROP TRIGGER events_append_only ON dcb.events;
DROP TRIGGER events_no_truncate ON dcb.events;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON dcb.events
    FOR EACH ROW EXECUTE FUNCTION dcb.reject_history_change_v2();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON dcb.events
    FOR EACH STATEMENT EXECUTE FUNCTION dcb.reject_history_change_v2();

-- PostgreSQL grants EXECUTE on every new function to PUBLIC. Revoke it from every function of
-- the schema (those of v6_conditions.sql included): only the owner and the roles that
-- dcb_store.roles granted may call them. (ALTER DEFAULT PRIVILEGES cannot revoke PUBLIC's
-- EXECUTE for one schema only; a later revision that creates functions ends with this same
-- statement, and tests/test_grants.py fails if one does not.)
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA dcb FROM PUBLIC;
REVOKE ALL ON SCHEMA dcb FROM PUBLIC;
