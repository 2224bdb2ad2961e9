-- dcb_store schema, version 8 (revision 0008): the follower's check and the holder checks in
-- PL/pgSQL, with the same bodies.
--
-- A LANGUAGE sql function with a SET clause is never inlined, and its query is planned again
-- in every transaction that calls it; PL/pgSQL keeps the plan for the session.
-- appends_in_flight_v2, which a follower asks before each read, cost 130 us per call so; the
-- holder checks run once per other writer's marker in every read's in-flight cap and every
-- follower's check while appends are in flight.

-- Is this backend a session of the store's own roles (by its login role)?
CREATE OR REPLACE FUNCTION dcb.is_store_session_v1(p_pid integer) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(bool_or(dcb.is_store_role_v1(a.usesysid)), false)
              FROM pg_stat_get_activity(p_pid) a);
END
$$;

-- The same for a lock holder as pg_locks shows it: a backend (pid), or a prepared transaction
-- (no pid; virtualtransaction '-1/<xid>'), whose owner must be a store role. A prepared
-- transaction keeps its in-flight marker until COMMIT PREPARED: ignoring it would let a read's
-- head pass its events.
CREATE OR REPLACE FUNCTION dcb.is_store_holder_v1(p_pid integer, p_vxid text) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_pid IS NOT NULL THEN
        RETURN dcb.is_store_session_v1(p_pid);
    END IF;
    RETURN coalesce((SELECT bool_or(dcb.is_store_role_v1(r.oid))
                       FROM pg_prepared_xacts x JOIN pg_roles r ON r.rolname = x.owner
                      WHERE '-1/' || x.transaction::text = p_vxid), false);
END
$$;

-- How many other sessions of the store hold an in-flight marker (appends not yet ended), plus
-- one if a foreign session holds the notify key (it silences notifications: followers must
-- poll as if appends were in flight).
CREATE OR REPLACE FUNCTION dcb.appends_in_flight_v2() RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT (count(DISTINCT l.virtualtransaction)
                        FILTER (WHERE (l.classid::bigint >> 24) = 221
                                  AND dcb.is_store_holder_v1(l.pid, l.virtualtransaction))
                    + count(*) FILTER (WHERE l.classid::bigint = 3724541952 AND l.objid = 0 AND l.granted
                                         AND NOT dcb.is_store_holder_v1(l.pid, l.virtualtransaction)))::integer
              FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.pid IS DISTINCT FROM pg_backend_pid()
               AND (l.classid::bigint >> 24) IN (221, 222));
END
$$;
