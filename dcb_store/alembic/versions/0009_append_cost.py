"""dcb schema v9: what every append paid for statements rather than work.

v9_event_checks.sql: the eight CHECK constraints of revision 0006 as one CHECK calling
dcb.event_valid_v1 (the same rules; PostgreSQL prepares each CHECK again for every INSERT
statement, which cost every append about 45 us; one call costs about 15).
v9_append.sql: append_v5's body with the in-flight marker taken in expressions, and by every
append whatever the session setting says (the protocol of revision 0008 unchanged).
v9_check_snapshot.sql: the snapshot probe bounds what the transaction saw from others by its own
first position, not by a session setting it could forge.

Revision ID: 0009_append_cost
Revises: 0008_append_v5
Create Date: 2026-11-25
"""

from alembic import op
from dcb_store import _sql

revision = "0009_append_cost"
down_revision = "0008_append_v5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v9_event_checks.sql"))
    op.execute(_sql.load("v9_append.sql"))
    op.execute(_sql.load("v9_check_snapshot.sql"))


def downgrade() -> None:
    op.execute(_sql.replacing("v6_conditions.sql", "dcb.check_snapshot_v1("))
    # revision 0008's body, from the file that created it (the grants stay with the function)
    op.execute(_sql.replacing("v8_append.sql", "dcb.append_v5("))
    op.execute(_sql.load("v9_event_checks_down.sql"))
