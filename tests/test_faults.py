"""Faults on real PostgreSQL: a killed backend; statement_timeout told apart from lock timeouts."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import DcbStoreError, Event, EventStore, LockTimeoutError, StatementTimeoutError


def _wait_for_waiter(engine: Engine) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with Session(engine) as s:
            waiting = [lock for lock in EventStore(s).lock_stats() if not lock.granted]
        if waiting:
            return waiting[0].pid
        time.sleep(0.02)
    raise AssertionError("no append ever waited")


def test_a_backend_killed_mid_append_stores_nothing_and_keeps_no_lock(engine: Engine) -> None:
    holder = Session(engine)
    EventStore(holder).append(Event("Hold", tags=["lock:k:1"]))
    errors: list[BaseException] = []

    def victim() -> None:
        with Session(engine) as s:
            try:
                # a batch that is inside dcb.append_v1, waiting for the lock, when it is killed
                EventStore(s, lock_timeout=30).append(
                    [Event("Victim", {"i": i}, ["lock:k:1", f"v:{i}"]) for i in range(500)]
                )
                s.commit()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    t = threading.Thread(target=victim)
    t.start()
    pid = _wait_for_waiter(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], DcbStoreError), errors
    assert "terminat" in str(errors[0]).lower()
    holder.commit()
    holder.close()
    with Session(engine) as s:
        store = EventStore(s)
        assert [e.type for e in store.read()] == ["Hold"]
        assert store.lock_count() == 0


def test_statement_timeout_is_not_a_lock_timeout(engine: Engine) -> None:
    holder = Session(engine)
    EventStore(holder).append(Event("Hold", tags=["lock:k:2"]))
    with Session(engine) as s:
        s.execute(text("SET LOCAL statement_timeout = '200ms'"))
        with pytest.raises(StatementTimeoutError) as info:
            EventStore(s, lock_timeout=30).append(Event("X", tags=["lock:k:2"]))
        assert not isinstance(info.value, LockTimeoutError) and info.value.sqlstate == "57014"
    holder.rollback()
    holder.close()
