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
    # append_v1 gets its own version 1 body back, then append_v2 goes
    op.execute(_sql.load("v4_append_v2_down.sql"))
