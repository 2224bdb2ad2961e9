"""dcb schema v2: history is append-only (UPDATE, DELETE, TRUNCATE on dcb.events rejected).

Revision ID: 0002_append_only
Revises: 0001_dcb_v1
Create Date: 2026-11-23
"""

from alembic import op
from dcb_store import _sql

revision = "0002_append_only"
down_revision = "0001_dcb_v1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v2_append_only.sql"))


def downgrade() -> None:
    op.execute("DROP TRIGGER events_no_truncate ON dcb.events")
    op.execute("DROP TRIGGER events_append_only ON dcb.events")
    op.execute("DROP FUNCTION dcb.reject_history_change_v1()")
