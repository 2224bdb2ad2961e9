"""The workloads of the benchmark.

Each makes, per thread, an operation that returns the events it wrote (0 when the decision lost
a race).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from dcb_store import AppendCondition, ConcurrencyError, Event, EventStore, Projection, Query

__all__ = [
    "append_op",
    "appends_on",
    "baseline_op",
    "contended_op",
    "decision_op",
    "session_baseline_op",
]

_PLAIN_INSERT = (
    "INSERT INTO bench_plain (type, tags, data) "
    "SELECT 'Registered', ARRAY[t], '{\"x\": 1}'::jsonb FROM unnest(%s::text[]) t"
)


def baseline_op(engine: Engine, batch: int) -> Callable[[int], Callable[[], int]]:
    """The physical baseline: the same rows through the bare driver, then COMMIT."""

    def make(_i: int) -> Callable[[], int]:
        raw = engine.raw_connection()
        cur = raw.cursor()

        def op() -> int:
            cur.execute(_PLAIN_INSERT, ([f"s:{uuid.uuid4()}" for _ in range(batch)],))
            raw.commit()
            return batch

        return op

    return make


def session_baseline_op(engine: Engine, batch: int) -> Callable[[int], Callable[[], int]]:
    """The same INSERT+COMMIT through a SQLAlchemy Session, the client stack the store runs on.

    The store cannot be faster than its host's Session; the ratio to this baseline is what the
    library itself costs.
    """
    statement = text(_PLAIN_INSERT.replace("%s", "CAST(:tags AS text[])"))

    def make(_i: int) -> Callable[[], int]:
        session = Session(engine)

        def op() -> int:
            session.execute(statement, {"tags": [f"s:{uuid.uuid4()}" for _ in range(batch)]})
            session.commit()
            return batch

        return op

    return make


def append_op(
    engine: Engine, batch: int, kind: str, *, on_connection: bool = False, autocommit: bool = False
) -> Callable[[int], Callable[[], int]]:
    """Appends of unrelated events; through a Session, or a bare Connection when asked.

    With ``autocommit`` the Connection is at AUTOCOMMIT: each append is its own transaction,
    in one round trip.
    """
    if autocommit:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def make(_i: int) -> Callable[[], int]:
        return appends_on(engine.connect() if on_connection else Session(engine), batch, kind)

    return make


def appends_on(owner: Session | Connection, batch: int, kind: str) -> Callable[[], int]:
    """One append of ``batch`` events, each with a tag of its own, and its commit, on ``owner``.

    ``kind``: "none" (plain), "cond" (conditional on the first tag) or "lock" (``lock:`` tags
    and the condition). The op returns the events written (0 if the condition failed).
    """
    store = EventStore(owner)
    prefix = "lock:" if kind == "lock" else ""

    def op() -> int:
        tags = [f"s:{uuid.uuid4()}" for _ in range(batch)]
        events = [Event("Registered", {"x": 1}, [prefix + t]) for t in tags]
        cond = None if kind == "none" else AppendCondition(Query.of(tags=[tags[0]]))
        return _commit_or_conflict(owner, lambda: store.append(events, cond)) * batch

    return op


def _commit_or_conflict(session: Session | Connection, append: Callable[[], object]) -> int:
    """Append and commit: 1 event written, or 0 when the decision lost a race."""
    try:
        append()
        session.commit()
        return 1
    except ConcurrencyError:
        session.rollback()
        return 0


def contended_op(engine: Engine, tag: str) -> Callable[[int], Callable[[], int]]:
    """Read the tag's head, then append on it conditionally: every writer decides on one tag."""

    def make(i: int) -> Callable[[], int]:
        session = Session(engine)
        store = EventStore(session, lock_timeout=10)
        query = Query.of(tags=[tag])

        def op() -> int:
            head = store.read(query, backwards=True, limit=1).head
            return _commit_or_conflict(
                session,
                lambda: store.append(
                    Event("Bumped", {"w": i}, [tag]), AppendCondition(query, head)
                ),
            )

        return op

    return make


def decision_op(engine: Engine) -> Callable[[int], Callable[[], int]]:
    """Three projections answered by one read: course capacity, seats taken, student load."""

    def make(i: int) -> Callable[[], int]:
        session = Session(engine)
        store = EventStore(session, lock_timeout=10)

        def op() -> int:
            course = f"course:{random.randint(0, 999)}"
            student = f"student:{i}-{random.randint(0, 99_999)}"
            capacity = Projection(
                Query.of(types=["CourseDefined"], tags=[course]),
                10**6,
                lambda _c, e: e.data["capacity"],
            )
            seats = Projection(
                Query.of(types=["StudentSubscribed"], tags=[course]), 0, lambda n, _e: n + 1
            )
            load = Projection(
                Query.of(types=["StudentSubscribed"], tags=[student]), 0, lambda n, _e: n + 1
            )
            (cap, taken, mine), condition = store.project([capacity, seats, load])
            if taken >= cap or mine >= 10:  # the decision
                session.rollback()
                return 0
            return _commit_or_conflict(
                session,
                lambda: store.append(Event("StudentSubscribed", {}, [course, student]), condition),
            )

        return op

    return make
