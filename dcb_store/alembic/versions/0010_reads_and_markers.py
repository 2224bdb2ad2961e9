"""dcb schema v10: the older appends take their in-flight marker; one-item reads set up faster.

v10_older_appends.sql: append_v3 and append_v4 (kept for code of earlier releases) take the
in-flight marker at every append, as append_v5 does since revision 0009, instead of skipping
it when the session setting names the transaction (a writer role that forged the setting
appended without a marker: readers' heads passed its events, and its own later decisions at
REPEATABLE READ and SERIALIZABLE were not probed below them).
v10_read_v1.sql: read_v1's body (same contract and results) computes, for a query of one item,
what check_items_v1, query_key_names_v1 and the items' aggregates computed, in a few
expressions and one statement: about 55 us less server time per such read. A null tag or type
in a query is refused (22023), as the append's condition refuses it.

Revision ID: 0010_reads_and_markers
Revises: 0009_append_cost
Create Date: 2026-11-25
"""

from alembic import op
from dcb_store import _sql

revision = "0010_reads_and_markers"
down_revision = "0009_append_cost"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(_sql.load("v10_older_appends.sql"))
    op.execute(_sql.load("v10_read_v1.sql"))


def downgrade() -> None:
    op.execute(_sql.load("v7_read_v1.sql"))  # read_v1's version 7 body
    # the bodies of revisions 0006 and 0007, from the files that created them
    op.execute(_sql.replacing("v7_append.sql", "dcb.append_v4("))
    op.execute(_sql.replacing("v6_conditions.sql", "dcb.append_v3("))
