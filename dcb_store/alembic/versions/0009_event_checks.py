"""dcb schema v9: the events table's eight checks as one.

v9_event_checks.sql: the eight CHECK constraints of revision 0006 as one CHECK calling
dcb.event_valid_v1 (the same rules; PostgreSQL prepares each CHECK again for every INSERT
statement, which cost every append about 45 us; one call costs about 15).

Revision ID: 0009_event_checks
Revises: 0008_append_v5
Create Date: 2026-11-25
"""

from alembic import op
from dcb_store import _sql

revision = "0009_event_checks"
down_revision = "0008_append_v5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v9_event_checks.sql"))


def downgrade() -> None:
    op.execute(_sql.load("v9_event_checks_down.sql"))
