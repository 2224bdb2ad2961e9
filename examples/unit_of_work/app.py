"""A framework-free unit of work (in the style of Django's atomic() / Cosmic Python) around
dcb_store, with retry on conflict: the app's own table and its events commit together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    Event,
    EventStore,
    EventStoreLike,
    Query,
    RetryPolicy,
    run_in_transaction,
)

T = TypeVar("T")


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[tuple[Session, EventStore]]:
    """One transaction: commit on success, roll back on any error."""
    with Session(engine) as session:
        try:
            yield session, EventStore(session)
            session.commit()
        except BaseException:
            session.rollback()
            raise


def retrying(engine: Engine, work: Callable[[Session, EventStoreLike], T]) -> T:
    """Run ``work`` in a fresh unit of work, again on a lost race (dcb_store's retry helper)."""
    return run_in_transaction(
        engine, lambda session: work(session, EventStore(session)), RetryPolicy(attempts=20)
    )


def setup(engine: Engine, course: str, capacity: int) -> None:
    with unit_of_work(engine) as (session, store):
        session.execute(text("CREATE TABLE IF NOT EXISTS seat_cards (course text, student text)"))
        store.append(Event("CourseDefined", {"capacity": capacity}, [f"course:{course}"]))


def subscribe(engine: Engine, course: str, student: str) -> bool:
    """Subscribe if a seat is left; the app's seat card and the event commit together."""

    def work(session: Session, store: EventStoreLike) -> bool:
        query = Query.of(tags=[f"course:{course}"])
        seen = store.read(query)
        capacity = next(e.data["capacity"] for e in seen if e.type == "CourseDefined")
        if sum(e.type == "StudentSubscribed" for e in seen) >= capacity:
            return False
        session.execute(text("INSERT INTO seat_cards VALUES (:c, :s)"), {"c": course, "s": student})
        store.append(
            Event(
                "StudentSubscribed",
                {"student": student},
                [f"course:{course}", f"student:{student}"],
            ),
            AppendCondition(query, seen.head),
        )
        return True

    return retrying(engine, work)
