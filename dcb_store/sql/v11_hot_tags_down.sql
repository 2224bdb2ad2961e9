-- Undoes v11_hot_tags.sql after the downgrade of revision 0011 has restored the bodies of
-- append_v5 and tags_are_hot_v1 that do not call it.
DROP FUNCTION dcb.cached_hot_tags_v1(text, bigint);
