"""dcb schema v11: the usual append takes its locks without planning them.

v11_append.sql: append_v5's body tries the locks of an append of one event without an id or
lock: tags one by one, each only if it is free at once (a try never waits, so their order
cannot deadlock), and falls back to revision 0009's sorted plan when one is not. The same keys
and modes, marker, traces and outcomes (the protocol of revision 0008 unchanged); about 27 us
less server time per append.

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
    op.execute(_sql.load("v11_append.sql"))


def downgrade() -> None:
    op.execute(_sql.load("v9_append.sql"))  # revision 0009's body (CREATE OR REPLACE)
