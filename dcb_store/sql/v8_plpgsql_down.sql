-- Revision 0008 down: the follower's check and the holder checks back in SQL (version 6's bodies).

CREATE OR REPLACE FUNCTION dcb.is_store_session_v1(p_pid integer) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(bool_or(dcb.is_store_role_v1(a.usesysid)), false)
    FROM pg_stat_get_activity(p_pid) a
$$;

CREATE OR REPLACE FUNCTION dcb.is_store_holder_v1(p_pid integer, p_vxid text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_pid IS NOT NULL THEN dcb.is_store_session_v1(p_pid)
           ELSE coalesce((SELECT bool_or(dcb.is_store_role_v1(r.oid))
                          FROM pg_prepared_xacts x JOIN pg_roles r ON r.rolname = x.owner
                          WHERE '-1/' || x.transaction::text = p_vxid), false)
           END
$$;

CREATE OR REPLACE FUNCTION dcb.appends_in_flight_v2() RETURNS integer
LANGUAGE sql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (count(DISTINCT l.virtualtransaction)
                FILTER (WHERE (l.classid::bigint >> 24) = 221
                          AND dcb.is_store_holder_v1(l.pid, l.virtualtransaction))
            + count(*) FILTER (WHERE l.classid::bigint = 3724541952 AND l.objid = 0 AND l.granted
                                 AND NOT dcb.is_store_holder_v1(l.pid, l.virtualtransaction)))::integer
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid IS DISTINCT FROM pg_backend_pid()
      AND (l.classid::bigint >> 24) IN (221, 222)
$$;
