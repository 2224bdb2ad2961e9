-- Revert v6_hardening.sql: PUBLIC may execute the functions again (PostgreSQL's default), the
-- version 2 erasure switch comes back, the table's checks and their function go.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA dcb TO PUBLIC;

DROP TRIGGER events_append_only ON dcb.events;
DROP TRIGGER events_no_truncate ON dcb.events;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON dcb.events
    FOR EACH ROW EXECUTE FUNCTION dcb.reject_history_change_v1();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON dcb.events
    FOR EACH STATEMENT EXECUTE FUNCTION dcb.reject_history_change_v1();
DROP FUNCTION dcb.reject_history_change_v2();
DROP FUNCTION dcb.allow_erasure_v1();

ALTER TABLE dcb.events
    DROP CONSTRAINT events_tag_count,
    DROP CONSTRAINT events_tags_present,
    DROP CONSTRAINT events_tags_valid,
    DROP CONSTRAINT events_metadata_object,
    DROP CONSTRAINT events_data_size,
    DROP CONSTRAINT events_metadata_size,
    DROP CONSTRAINT events_data_depth,
    DROP CONSTRAINT events_metadata_depth;
DROP FUNCTION dcb.tags_valid_v1(text[]);
