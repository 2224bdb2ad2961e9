-- dcb_store schema, version 2: history is append-only.
-- UPDATE, DELETE and TRUNCATE on dcb.events are rejected with SQLSTATE DCB10. The deliberate,
-- documented escape hatch for a legal erasure: SET LOCAL dcb.allow_erasure = on in that
-- transaction (roles that may do so are your decision; see docs/usage.md).

CREATE FUNCTION dcb.reject_history_change_v1() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(current_setting('dcb.allow_erasure', true), '') = 'on' THEN
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
        HINT = 'for a deliberate erasure, SET LOCAL dcb.allow_erasure = on in that transaction';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON dcb.events
    FOR EACH ROW EXECUTE FUNCTION dcb.reject_history_change_v1();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON dcb.events
    FOR EACH STATEMENT EXECUTE FUNCTION dcb.reject_history_change_v1();
