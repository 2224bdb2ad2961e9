-- dcb_store schema, version 3: following the store.
-- A NOTIFY on channel dcb_events after every statement that appends: PostgreSQL delivers it at
-- COMMIT (and never for a rolled-back transaction), which wakes subscribers without polling.
-- Checkpoints keep a projection runner's position; the runner updates its row in the same
-- transaction as its read-model writes, so effects happen exactly once.

CREATE FUNCTION dcb.notify_appended_v1() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('dcb_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON dcb.events
    FOR EACH STATEMENT EXECUTE FUNCTION dcb.notify_appended_v1();

CREATE TABLE dcb.checkpoints (
    name       text        PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
