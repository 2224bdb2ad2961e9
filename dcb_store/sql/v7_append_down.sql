-- Revision 0007 down: code of the previous version calls append_v3, which 0007 left untouched.
DROP FUNCTION dcb.append_v4(jsonb, text[], jsonb, integer);
DROP FUNCTION dcb.prune_traces_v2();
