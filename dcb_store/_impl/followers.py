"""The connections followers take from an Engine: their own, never the caller's transaction.

Subscriptions and projection runners read in transactions of their own, at READ COMMITTED
whatever level the Engine is configured for (a snapshot older than their read could miss an
event that was in flight when it was taken: docs/consistency.md, "Safe heads"), or in
statements of their own at AUTOCOMMIT, whose snapshots are the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

__all__ = ["autocommit", "read_committed_session"]


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection at AUTOCOMMIT, for a poll: a subscription's, an idle runner's.

    Each statement is a transaction of its own (statement snapshots, as at READ COMMITTED):
    no BEGIN or ROLLBACK round trips, and no ROLLBACK to clear psycopg's prepared statements
    (it forgets them all at every ROLLBACK, so a poll ending in one was never prepared).
    """
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def read_committed_session(engine: Engine) -> Iterator[Session]:
    """A Session of its own, at READ COMMITTED whatever level ``engine`` is configured for.

    Followers read in transactions of their own: a snapshot older than their read could miss
    an event that was in flight when it was taken (docs/consistency.md, "Safe heads"). The
    level is set on the connection: SQLAlchemy lets an engine's own level win over a derived
    engine's.
    """
    with engine.connect() as conn:
        rc = conn.execution_options(isolation_level="READ COMMITTED")
        with Session(bind=rc) as session:
            yield session
