"""dcb schema v7: append_v4, append_v3's protocol in fewer statements; faster many-item reads.

v7_append.sql: append_v4 (the same keys, modes, markers, traces and probe as append_v3, which
stays for code of the previous version: appends of both versions serialize with each other).
v7_read_v1.sql: read_v1 with one scan of the tag index for reads of many one-tag items.

Revision ID: 0007_append_v4
Revises: 0006_conditions
Create Date: 2026-11-24
"""

from alembic import op
from dcb_store import _sql

revision = "0007_append_v4"
down_revision = "0006_conditions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v7_append.sql"))
    op.execute(_sql.load("v7_read_v1.sql"))


def downgrade() -> None:
    op.execute(_sql.load("v7_append_down.sql"))
    op.execute(_sql.load("v6_read_v1.sql"))  # read_v1's version 6 body
