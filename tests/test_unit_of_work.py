"""The store in the host's unit of work: failed appends, rollbacks, ORM rows in one transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dcb_store import AppendCondition, ConditionFailedError, Event, EventStore, Query
from tests.helpers import count_events


def test_failed_append_leaves_the_transaction_usable(store: EventStore, session: Session) -> None:
    session.execute(text("CREATE TEMP TABLE app_rows (v int)"))
    session.execute(text("INSERT INTO app_rows VALUES (1)"))
    store.append(Event("A", tags=["k:1"]))
    with pytest.raises(ConditionFailedError):
        store.append(Event("A", tags=["k:1"]), AppendCondition(Query.of(tags=["k:1"])))
    session.execute(text("INSERT INTO app_rows VALUES (2)"))
    assert session.execute(text("SELECT count(*) FROM app_rows")).scalar_one() == 2
    assert count_events(session) == 1


def test_rollback_leaves_neither_events_nor_locks(engine: Engine) -> None:
    with Session(engine) as s:
        store = EventStore(s)
        store.append(Event("A", tags=["lock:k:1"]))
        assert store.lock_count() > 0
        s.rollback()
        assert store.lock_count() == 0
        assert len(store.read()) == 0


class _Base(DeclarativeBase):
    pass


class Enrolment(_Base):
    __tablename__ = "enrolments"
    id: Mapped[int] = mapped_column(primary_key=True)
    student: Mapped[str]


def test_orm_rows_and_events_commit_or_roll_back_together(engine: Engine) -> None:
    _Base.metadata.create_all(engine)
    for commit in (True, False):
        with Session(engine) as s:
            s.add(Enrolment(student="s1"))
            s.flush()
            EventStore(s).append(Event("Enrolled", tags=["student:s1"]))
            s.commit() if commit else s.rollback()
    with Session(engine) as s:
        assert s.query(Enrolment).count() == 1
        assert len(EventStore(s).read()) == 1
