"""dcb schema v5: faster paths.

Reads in one round trip (read_v1); one notifier at a time (notify_appended_v2), with
appends_in_flight_v1 for followers.

Revision ID: 0005_fast_paths
Revises: 0004_append_v2
Create Date: 2026-11-23
"""

from alembic import op
from dcb_store import _sql

revision = "0005_fast_paths"
down_revision = "0004_append_v2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v5_read_v1.sql"))
    op.execute(_sql.load("v5_following.sql"))


def downgrade() -> None:
    op.execute("DROP TRIGGER events_notify ON dcb.events")
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON dcb.events "
        "FOR EACH STATEMENT EXECUTE FUNCTION dcb.notify_appended_v1()"
    )
    op.execute("DROP FUNCTION dcb.notify_appended_v2()")
    op.execute("DROP FUNCTION dcb.appends_in_flight_v1()")
    op.execute("DROP FUNCTION dcb.read_v1(jsonb, bigint, integer, boolean)")
