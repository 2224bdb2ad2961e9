"""dcb schema v11: the usual append takes its locks without a plan, reads hot tags inline.

v11_append.sql: append_v5's body tries the locks of an append of one event without an id or
lock: tags one by one, each only if it is free at once (a try never waits, so their order
cannot deadlock), and falls back to revision 0009's sorted plan when one is not. The same keys
and modes, marker, traces and outcomes (the protocol of revision 0008 unchanged); about 27 us
less server time per append. It reads the session's cached hot-tag list inline.
v11_hot_tags.sql: cached_hot_tags_v1, the session's cached hot-tag list as one expression that
PostgreSQL inlines into its caller (append_v5, tags_are_hot_v1); tags_are_hot_v1's body reads
its cache through it (same answers). About 10 us less per conditional append.

Revision ID: 0011_append_try_locks
Revises: 0010_reads_and_markers
Create Date: 2026-11-25
"""

from alembic import op
from dcb_store import _sql

revision = "0011_append_try_locks"
down_revision = "0010_reads_and_markers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v11_hot_tags.sql"))
    op.execute(_sql.load("v11_append.sql"))


def downgrade() -> None:
    op.execute(_sql.load("v9_append.sql"))  # revision 0009's body (CREATE OR REPLACE)
    op.execute(_sql.replacing("v8_hot_tags.sql", "dcb.tags_are_hot_v1("))  # revision 0008's
    op.execute(_sql.load("v11_hot_tags_down.sql"))
