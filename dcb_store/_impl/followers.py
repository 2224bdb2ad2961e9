"""The connections followers take from an Engine: their own, never the caller's transaction.

Subscriptions and projection runners read in transactions of their own, at READ COMMITTED
whatever level the Engine is configured for (a snapshot older than their read could miss an
event that was in flight when it was taken: docs/consistency.md, "Safe heads"), or in
statements of their own at AUTOCOMMIT, whose snapshots are the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, TextClause
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dcb_store._impl import driver, rows
from dcb_store._impl import statements as st
from dcb_store._impl.replica import check_not_standby
from dcb_store.events import SequencedEvent
from dcb_store.observing import observed
from dcb_store.queries import Query

__all__ = [
    "autocommit",
    "execute_unless_unsupported",
    "nothing_after_checkpoint",
    "poll_in_one_statement",
    "read_committed_session",
]


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


def poll_in_one_statement(
    engine: Engine, statements: st.Statements, query: Query | None, after: int | None, limit: int
) -> tuple[list[SequencedEvent], bool] | None:
    """A subscription's poll: the checks and the read in one statement at AUTOCOMMIT.

    The page and whether appends were in flight before it was read; None when the server runs
    such statements at another level than READ COMMITTED (its default_transaction_isolation,
    set for the database, the role or the session): the read is then skipped inside the
    statement, and the caller polls in a transaction at READ COMMITTED (found by an adversarial
    review: under a snapshot the read would probe and refuse).
    """
    call = st.prepare_read(query, after, limit, False)
    with autocommit(engine) as conn, observed("read", st.read_attributes(call)):
        found = execute_unless_unsupported(conn, statements.FOLLOWER_READ, call.params)
        if found is None:
            return None
        in_flight, standby, read_committed = found[0][:3]
        if standby:
            check_not_standby(conn, "engine")
        if not read_committed:
            return None
        return rows.read_result(call, [row[3:] for row in found]).events, in_flight > 0


def nothing_after_checkpoint(
    engine: Engine, statements: st.Statements, name: str, query: Query | None
) -> bool:
    """Whether no event follows runner ``name``'s checkpoint (one statement at AUTOCOMMIT).

    An idle runner's run then costs one round trip instead of a transaction of five. False when
    the statement could not read at READ COMMITTED (the read is skipped, as in a subscription's
    poll) and on a standby, where the runner's transaction must run to raise
    StandbyWithoutPrimaryError.
    """
    items = st.prepare_read(query, None, 1, False).params["items"]
    with autocommit(engine) as conn:
        params = {"n": name, "items": items}
        found = execute_unless_unsupported(conn, statements.RUNNER_PEEK, params)
    if found is None:
        return False
    (standby, read_committed, position), *_ = found
    return bool(not standby and read_committed and position is None)


def execute_unless_unsupported(
    conn: Connection, statement: TextClause, params: dict[str, Any]
) -> Sequence[Any] | None:
    """A follower's statement at AUTOCOMMIT; None where the server's default level cannot run.

    A hot standby refuses any statement at SERIALIZABLE (0A000, "cannot use serializable mode
    in a hot standby"), so a standby whose default level is SERIALIZABLE never answers the
    statement's own standby check: the follower's transaction at READ COMMITTED then asks, and
    refuses with StandbyWithoutPrimaryError (found by an adversarial review).
    """
    try:
        return driver.execute(conn, statement, params)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "0A000":
            return None
        raise
