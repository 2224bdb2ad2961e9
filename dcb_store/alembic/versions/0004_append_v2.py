"""dcb schema v4: append_v2 returns the lock wait; append_v1 becomes a wrapper over it.

Revision ID: 0004_append_v2
Revises: 0003_following
Create Date: 2026-11-23
"""

from alembic import op
from dcb_store import _sql

revision = "0004_append_v2"
down_revision = "0003_following"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v4_append_v2.sql"))


def downgrade() -> None:
    # append_v1 gets its own body back (from the v1 file), then append_v2 goes
    v1 = _sql.load("v1_functions.sql")
    start = v1.index("CREATE FUNCTION dcb.append_v1(")
    end = v1.index("-- How many advisory locks")
    op.execute("DROP FUNCTION dcb.append_v1(jsonb, text[], jsonb, integer)")
    op.execute(v1[start:end])
    op.execute("DROP FUNCTION dcb.append_v2(jsonb, text[], jsonb, integer)")
