"""dcb schema v6: conditions at every isolation level; a hardened schema.

v6_conditions.sql: append_v3 (conditions that hold at READ COMMITTED, REPEATABLE READ and
SERIALIZABLE), and what it needs. v6_hardening.sql: grants, limits and checks for a database
shared with roles the store does not trust.

Revision ID: 0006_conditions
Revises: 0005_fast_paths
Create Date: 2026-11-24
"""

from alembic import op
from dcb_store import _sql

revision = "0006_conditions"
down_revision = "0005_fast_paths"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v6_conditions.sql"))
    op.execute(_sql.load("v6_read_v1.sql"))
    op.execute(_sql.load("v6_hardening.sql"))


def downgrade() -> None:
    op.execute(_sql.load("v6_hardening_down.sql"))
    op.execute(_sql.load("v6_conditions_down.sql"))
    # the version 4 and 5 bodies of append_v2 (and its append_v1 wrapper) and read_v1
    op.execute(_sql.load("v4_append_v2.sql"))
    op.execute(_sql.load("v5_read_v1.sql"))
