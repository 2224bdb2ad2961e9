"""dcb schema v5: read_v1 computes the in-flight cap and reads in one round trip.

Revision ID: 0005_read_v1
Revises: 0004_append_v2
Create Date: 2026-11-23
"""

from alembic import op
from dcb_store import _sql

revision = "0005_read_v1"
down_revision = "0004_append_v2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v5_read_v1.sql"))


def downgrade() -> None:
    op.execute("DROP FUNCTION dcb.read_v1(jsonb, bigint, integer, boolean)")
