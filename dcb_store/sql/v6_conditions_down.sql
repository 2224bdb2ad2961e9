-- Revert revision 0006's conditions: the version 5 functions come back from their own files.
DROP FUNCTION dcb.read_v1(jsonb, bigint, integer, boolean);
DROP FUNCTION dcb.append_v2(jsonb, text[], jsonb, integer);
DROP FUNCTION dcb.append_v3(jsonb, text[], jsonb, integer);
DROP FUNCTION dcb.insert_events_v1(jsonb);
DROP FUNCTION dcb.tags_are_hot_v1(text[]);
DROP FUNCTION dcb.appends_in_flight_v2();
DROP FUNCTION dcb.in_flight_cap_v2(bigint[]);
DROP FUNCTION dcb.is_store_holder_v1(integer, text);
DROP FUNCTION dcb.is_store_session_v1(integer);
DROP FUNCTION dcb.is_store_role_v1(oid);
DROP FUNCTION dcb.check_snapshot_v1(bigint[], bigint);
DROP FUNCTION dcb.check_items_v1(jsonb);
DROP FUNCTION dcb.prune_traces_v1();
DROP FUNCTION dcb.lock_key_v2(text);
DROP TABLE dcb.append_traces;
DROP SEQUENCE dcb.trace_horizon_seq;
