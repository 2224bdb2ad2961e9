"""dcb schema v8: append_v5, append_v4's protocol with fewer executor starts per append.

v8_append.sql: append_v5 (the same keys, modes, markers, traces and probe as append_v4 and
append_v3, which stay for code of earlier versions: appends of all three serialize with each
other).
v8_hot_tags.sql: the hot-tag list in a one-row table that appends refresh and every session
reads, so that a session whose transactions roll back does not read pg_stats on every call.
v8_plpgsql.sql: the follower's check (appends_in_flight_v2) and the holder checks in PL/pgSQL,
planned once per session instead of once per transaction.

Revision ID: 0008_append_v5
Revises: 0007_append_v4
Create Date: 2026-11-24
"""

from alembic import op
from dcb_store import _sql

revision = "0008_append_v5"
down_revision = "0007_append_v4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v8_hot_tags.sql"))
    op.execute(_sql.load("v8_append.sql"))
    op.execute(_sql.load("v8_plpgsql.sql"))


def downgrade() -> None:
    op.execute(_sql.load("v8_plpgsql_down.sql"))
    op.execute(_sql.load("v8_append_down.sql"))
    op.execute(_sql.load("v8_hot_tags_down.sql"))
