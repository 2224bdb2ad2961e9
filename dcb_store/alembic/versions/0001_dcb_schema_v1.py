"""dcb schema v1: events table, indexes, key clocks, append/read/monitoring functions.

Revision ID: 0001_dcb_v1
Revises:
Create Date: 2026-11-23
"""

from alembic import op
from dcb_store import _sql

revision = "0001_dcb_v1"
down_revision = None
branch_labels = ("dcb_store",)
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v1_schema.sql"))
    op.execute(_sql.load("v1_functions.sql"))


def downgrade() -> None:
    op.execute("DROP SCHEMA dcb CASCADE")
