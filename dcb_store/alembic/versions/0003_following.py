"""dcb schema v3: commit-time NOTIFY for subscribers, checkpoints for projection runners.

Revision ID: 0003_following
Revises: 0002_append_only
Create Date: 2026-11-23
"""

from alembic import op
from dcb_store import _sql

revision = "0003_following"
down_revision = "0002_append_only"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v3_following.sql"))


def downgrade() -> None:
    op.execute("DROP TABLE dcb.checkpoints")
    op.execute("DROP TRIGGER events_notify ON dcb.events")
    op.execute("DROP FUNCTION dcb.notify_appended_v1()")
