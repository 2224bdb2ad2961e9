"""Subscriptions and projection runners on real PostgreSQL, with writers committing out of order."""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore, ProjectionRunner, Query, subscribe


def write(engine: Engine, n: int, delay_ms: float = 10) -> None:
    for _ in range(n):
        with Session(engine) as s:
            EventStore(s).append(Event("E", tags=[f"w:{random.randint(0, 3)}"]))
            time.sleep(random.random() * delay_ms / 1000)  # commit out of position order
            s.commit()


def test_subscriber_catches_up_then_follows_without_skipping(engine: Engine) -> None:
    write(engine, 20, delay_ms=0)  # history to catch up on
    writers = [threading.Thread(target=write, args=(engine, 25)) for _ in range(4)]
    seen: list[int] = []
    sub = subscribe(engine, poll_interval=0.5)

    def follow() -> None:
        for event in sub:
            seen.append(event.position)
            if len(seen) == 120:
                sub.stop()

    follower = threading.Thread(target=follow)
    follower.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    follower.join(30)
    assert not follower.is_alive()
    assert len(seen) == 120 and seen == sorted(set(seen))
    with Session(engine) as s:
        assert seen == [e.position for e in EventStore(s).read()]


def test_live_events_arrive_by_notify_not_by_polling(engine: Engine) -> None:
    sub = subscribe(engine, Query.of(tags=["live:1"]), poll_interval=30)
    got: list[float] = []

    def follow() -> None:
        for _event in sub:
            got.append(time.monotonic())
            sub.stop()

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.5)  # the subscriber is asleep on LISTEN now
    with Session(engine) as s:
        EventStore(s).append(Event("Other", tags=["other:1"]))  # not ours: it stays asleep
        EventStore(s).append(Event("Live", tags=["live:1"]))
        s.commit()
    committed = time.monotonic()
    t.join(10)
    assert got and got[0] - committed < 2.0  # far below the 30 s poll interval


def test_an_append_that_did_not_notify_still_arrives_promptly(engine: Engine) -> None:
    # Only the transaction holding the notify key notifies. B appends while A holds it, so B
    # stays silent; A commits first (the follower wakes), B later. The follower must see that B
    # was in flight and poll again soon, not sleep for its 30 s poll interval.
    import psycopg

    from dcb_store.following import CHANNEL

    counter = psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    counter.autocommit = True
    counter.execute(f"LISTEN {CHANNEL}")
    sub = subscribe(engine, poll_interval=30, busy_interval=0.05)
    got: list[tuple[str, float]] = []

    def follow() -> None:
        for event in sub:
            got.append((event.type, time.monotonic()))
            if len(got) == 2:
                sub.stop()

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.5)  # the subscriber is asleep on LISTEN now
    a, b = Session(engine), Session(engine)
    EventStore(a).append(Event("A", tags=["n:1"]))
    EventStore(b).append(Event("B", tags=["n:2"]))
    a.commit()
    time.sleep(0.5)  # the follower has read A and gone back to sleep
    b.commit()
    committed = time.monotonic()
    t.join(10)
    assert [kind for kind, _ in got] == ["A", "B"]
    assert got[1][1] - committed < 2.0  # far below the 30 s poll interval
    notified = list(counter.notifies(timeout=0.5))
    counter.close()
    assert len(notified) == 1  # B did not notify: the gate works, and the follower coped


def test_stop_and_resume_from_a_stored_position(engine: Engine) -> None:
    write(engine, 5, delay_ms=0)
    first = subscribe(engine, poll_interval=0.2)
    positions = [next(first).position for _ in range(3)]
    stored = first.position
    first.stop()
    with pytest.raises(StopIteration):
        next(first)
    resumed = subscribe(engine, after=stored, poll_interval=0.2)
    rest = [next(resumed).position for _ in range(2)]
    resumed.stop()
    with Session(engine) as s:
        assert positions + rest == [e.position for e in EventStore(s).read()]


def test_projection_runner_applies_each_event_exactly_once(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE tally (tag text PRIMARY KEY, n int NOT NULL)"))
    write(engine, 30, delay_ms=0)
    crash_once = {"armed": True}

    def handle(session: Session, events) -> None:  # type: ignore[no-untyped-def]
        for e in events:
            session.execute(
                text(
                    "INSERT INTO tally VALUES (:t, 1) "
                    "ON CONFLICT (tag) DO UPDATE SET n = tally.n + 1"
                ),
                {"t": e.tags[0]},
            )
        if crash_once["armed"] and len(events) == 7:
            crash_once["armed"] = False
            raise RuntimeError("crash after writing, before the checkpoint")

    runner = ProjectionRunner(engine, "tally", handle, batch_size=7)
    with pytest.raises(RuntimeError):
        runner.run_once()
    assert runner.position() == 0  # the crashed batch left neither effects nor checkpoint
    progress: list[int] = []
    # two runners of the same name at once: they take turns on the checkpoint row
    other = ProjectionRunner(engine, "tally", handle, batch_size=7)
    t = threading.Thread(target=other.catch_up)
    t.start()
    runner.catch_up(progress.append, show_progress=True)
    t.join()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT sum(n) FROM tally")).scalar_one() == 30
    with Session(engine) as s:
        assert runner.position() == EventStore(s).read().head
    assert "replaying tally" in capsys.readouterr().err
