"""Lock tags, waiting writers, lock timeouts (store, call, context) and lock monitoring."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import AppendCondition, Event, EventStore, InvalidInputError, LockTimeoutError, Query


def test_lock_tags_are_stored_without_prefix(store: EventStore) -> None:
    store.append(Event("A", tags=["lock:course:c1", "student:s1", "course:c1"]))
    (event,) = store.read(Query.of(tags=["course:c1"]))
    assert event.tags == ("course:c1", "student:s1")


def test_second_writer_on_the_same_lock_tag_waits(engine: Engine) -> None:
    s1 = Session(engine)
    EventStore(s1).append(Event("A", tags=["lock:course:c1"]))
    done = threading.Event()

    def second() -> None:
        with Session(engine) as s2:
            EventStore(s2, lock_timeout=10).append(Event("B", tags=["lock:course:c1"]))
            s2.commit()
        done.set()

    t = threading.Thread(target=second)
    t.start()
    assert not done.wait(0.5), "the second writer did not wait for the lock"
    waiting = [lock for lock in EventStore(s1).lock_stats() if not lock.granted]
    assert len(waiting) == 1 and waiting[0].mode == "ExclusiveLock"
    assert waiting[0].wait_seconds is not None and waiting[0].wait_seconds > 0.2
    assert "dcb.append_v5" in (waiting[0].query or "")
    s1.commit()
    t.join(10)
    assert done.is_set()
    s1.close()
    with Session(engine) as s:
        assert [e.type for e in EventStore(s).read()] == ["A", "B"]
        assert EventStore(s).lock_count() == 0


def test_lock_timeout_is_honoured_and_does_not_leak(engine: Engine) -> None:
    holder = Session(engine)
    EventStore(holder).append(Event("A", tags=["lock:k:1"]))
    held = EventStore(holder).lock_count()
    with Session(engine) as s:
        s.execute(text("SELECT 1"))
        store = EventStore(s, lock_timeout=30)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as info:
            store.append(Event("B", tags=["lock:k:1"]), lock_timeout=0.3)
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 1.5 and info.value.timeout == 0.3
        # the append names what it waited for, though its plan and its locks are one statement
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert f"(exclusive) held by pid {holder_pid}" in (info.value.held or "")
        assert s.execute(text("SHOW lock_timeout")).scalar_one() == "0"
        assert store.lock_count() == held  # the holder's only; the failed append kept none
        store.append(Event("C", tags=["other:1"]))  # the transaction is still usable
        s.commit()
    holder.rollback()
    holder.close()


def test_monitoring_functions_while_held_and_after_release(engine: Engine) -> None:
    with Session(engine) as s:
        store = EventStore(s)
        assert store.lock_count() == 0 and store.lock_stats() == []
        store.append(Event("A", tags=["lock:k:1", "t:2"]), AppendCondition(Query.of(tags=["t:9"])))
        stats = store.lock_stats()
        assert store.lock_count() == len(stats) >= 4
        assert {lock.kind for lock in stats} == {"key", "in-flight marker"}
        assert all(lock.granted and lock.pid > 0 for lock in stats)
        assert sum(lock.mode == "ExclusiveLock" for lock in stats) == 2  # lock:k:1 and t:9
        s.commit()
        assert store.lock_count() == 0
    # other users' advisory locks are not counted
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(42), pg_advisory_lock(1, 2)"))
        assert conn.execute(text("SELECT dcb.get_advisory_lock_count()")).scalar_one() == 0
        conn.execute(text("SELECT pg_advisory_unlock_all()"))


def test_lock_timeout_from_context_call_beats_context_beats_store(engine: Engine) -> None:
    import asyncio

    from dcb_store import lock_timeout
    from dcb_store.timeouts import resolve_lock_timeout

    holder = Session(engine)
    EventStore(holder).append(Event("A", tags=["lock:k:ctx"]))
    with Session(engine) as s:
        store = EventStore(s, lock_timeout=30)
        with lock_timeout(0.2):
            started = time.monotonic()
            with pytest.raises(LockTimeoutError) as info:
                store.append(Event("B", tags=["lock:k:ctx"]))
            assert info.value.timeout == 0.2 and time.monotonic() - started < 1.5
            with pytest.raises(LockTimeoutError) as info:
                store.append(Event("B", tags=["lock:k:ctx"]), lock_timeout=0.1)
            assert info.value.timeout == 0.1
        assert (
            resolve_lock_timeout(
                store_default=30, per_call=__import__("dcb_store").timeouts.DEFAULT
            )
            == 30
        )
    holder.rollback()
    holder.close()

    async def task(seconds: float) -> float | None:
        with lock_timeout(seconds):
            await asyncio.sleep(0.01)  # the other task's context must not leak in
            return resolve_lock_timeout(__import__("dcb_store").timeouts.DEFAULT, 30)

    async def both() -> list[float | None]:
        return list(await asyncio.gather(task(1.0), task(2.0)))

    assert asyncio.run(both()) == [1.0, 2.0]
    with pytest.raises(InvalidInputError), lock_timeout(-1):
        pass


@pytest.mark.parametrize("keys", [1, 300], ids=["one key", "over the key budget"])
def test_a_timed_out_batch_names_what_it_waited_for(engine: Engine, keys: int) -> None:
    """A few keys are planned and locked in one statement; more than 256 names in two."""
    holder = Session(engine)
    EventStore(holder).append(Event("A", tags=["lock:k:batch"]))
    holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
    held = EventStore(holder).lock_count()
    with Session(engine) as s:
        batch = [Event("B", tags=["lock:k:batch"])] + [
            Event("B", tags=[f"t:{i}"]) for i in range(keys)
        ]
        with pytest.raises(LockTimeoutError) as info:
            EventStore(s).append(batch, lock_timeout=0.2)
        assert f"held by pid {holder_pid}" in (info.value.held or "")
        assert EventStore(s).lock_count() == held  # the holder's only
    holder.rollback()
    holder.close()
