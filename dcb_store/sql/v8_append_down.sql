-- Revision 0008 down: code of the previous version calls append_v4, which 0008 left untouched.
DROP FUNCTION dcb.append_v5(jsonb, text[], jsonb, integer);
