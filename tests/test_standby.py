"""Followers on a hot standby (#15), against a real streaming replica made for the session.

A standby shows no in-flight markers and makes commits visible in WAL order, so a follower
there takes its safe head and a WAL fence from the primary and reads once the standby has
replayed the fence (docs/consistency.md, "Followers on standbys").
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore, ProjectionRunner, Query, migrations, subscribe
from dcb_store.cli import main as cli_main
from dcb_store.errors import ReplicaLagError, StandbyWithoutPrimaryError
from tests.replication import ReplicaPair


@pytest.fixture(scope="module")
def pair(replica_pair: ReplicaPair) -> ReplicaPair:
    """The session's primary and standby (tests/conftest.py), the store migrated."""
    migrations.upgrade(replica_pair.primary_url)
    replica_pair.wait_for_standby()
    return replica_pair


@pytest.fixture(scope="module")
def primary(pair: ReplicaPair) -> Iterator[Engine]:
    eng = create_engine(pair.primary_url, pool_size=20, max_overflow=10)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def standby(pair: ReplicaPair) -> Iterator[Engine]:
    eng = create_engine(pair.standby_url, pool_size=20, max_overflow=10)
    yield eng
    eng.dispose()


def head(primary: Engine) -> int:
    with Session(primary) as s:
        return EventStore(s).head() or 0


def set_replay(standby: Engine, paused: bool) -> None:
    """Pause or resume the standby's replay, and wait until it is so."""
    with standby.connect() as conn:
        conn.execute(text(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()"))
        conn.commit()
        if paused:
            while conn.execute(text("SELECT pg_is_wal_replay_paused()")).scalar_one() is not True:
                time.sleep(0.01)
            # pausing is requested; replay stops at its next record
            time.sleep(0.2)


def visible_on(standby: Engine, position: int) -> bool:
    with standby.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT count(*) FROM dcb.events WHERE position = :p"), {"p": position}
            ).scalar_one()
        )


def test_followers_on_the_standby_see_every_commit_once_in_order(
    primary: Engine, standby: Engine
) -> None:
    start = head(primary)
    done = threading.Event()
    errors: list[BaseException] = []

    writing_ends = time.monotonic() + 3  # followers poll while writers commit out of order

    def writer(i: int) -> None:
        rng = random.Random(i)
        try:
            while time.monotonic() < writing_ends:
                with Session(primary) as s:
                    if rng.random() < 0.3:  # visible before its commit record is flushed
                        s.execute(text("SET LOCAL synchronous_commit = off"))
                    EventStore(s).append(
                        [
                            Event("E", tags=[f"w:{rng.randint(0, 3)}"])
                            for _ in range(rng.randint(1, 2))
                        ]
                    )
                    time.sleep(rng.random() * 0.015)  # commit out of position order
                    if rng.random() < 0.2:
                        s.rollback()
                    else:
                        s.commit()
                time.sleep(rng.random() * 0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    seen_all: list[int] = []
    seen_tag: list[int] = []
    seen_runner: list[int] = []
    seen_stream: list[int] = []
    subs = [
        subscribe(primary, after=start, batch_size=50, busy_interval=0.01, replica=standby),
        subscribe(
            primary, Query.of(tags=["w:1"]), after=start, busy_interval=0.01, replica=standby
        ),
    ]

    def follow(sub: Any, seen: list[int]) -> None:
        try:
            for event in sub:
                seen.append(event.position)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with primary.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dcb.checkpoints (name, position) VALUES ('standby-runner', :p) "
                "ON CONFLICT (name) DO UPDATE SET position = :p"
            ),
            {"p": start},
        )
    runner = ProjectionRunner(
        primary,
        "standby-runner",
        lambda _s, events: seen_runner.extend(e.position for e in events),
        batch_size=20,
        replica=standby,
    )

    def run() -> None:
        try:
            while not done.is_set():
                if not runner.run_once():
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def stream() -> None:  # a loop of streams from the primary's session, read on the standby
        last = start
        try:
            while not done.is_set():
                with Session(primary) as s:
                    for event in EventStore(s).stream(after=last, batch_size=50, replica=standby):
                        seen_stream.append(event.position)
                        last = event.position
                time.sleep(0.003)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=follow, args=(subs[0], seen_all))]
    threads.append(threading.Thread(target=follow, args=(subs[1], seen_tag)))
    threads += [threading.Thread(target=run), threading.Thread(target=stream)]
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads + writers:
        t.start()
    for t in writers:
        t.join()
    with Session(primary) as s:
        expected = [e.position for e in EventStore(s).read(after=start)]
        expected_tag = [e.position for e in EventStore(s).read(Query.of(tags=["w:1"]), after=start)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not errors:
        if all(
            len(seen) >= len(want)
            for seen, want in [
                (seen_all, expected),
                (seen_tag, expected_tag),
                (seen_runner, expected),
                (seen_stream, expected),
            ]
        ):
            break
        time.sleep(0.05)
    time.sleep(0.3)  # anything extra would show now
    done.set()
    for sub in subs:
        sub.stop()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert len(expected) > 100
    assert seen_all == expected, "subscription on the standby: skipped, repeated or reordered"
    assert seen_tag == expected_tag, "filtered subscription on the standby"
    assert seen_runner == expected, "projection runner reading on the standby"
    assert seen_stream == expected, "streams read on the standby"


def test_a_lagging_standby_delays_delivery_but_never_skips(
    primary: Engine, standby: Engine, pair: ReplicaPair
) -> None:
    """Position 11 commits and reaches the standby; replay pauses; then 10 commits.

    The primary's safe head is 11, the standby shows 11 but not 10: a follower that read the
    standby without waiting for the fence would deliver 11 and never 10.
    """
    start = head(primary)
    low = Session(primary)
    try:
        low_position = EventStore(low).append(Event("Low", tags=["lag"]))
        with Session(primary) as s:
            high_position = EventStore(s).append(Event("High", tags=["lag"]))
            s.commit()
        assert low_position < high_position
        pair.wait_for_standby()
        assert visible_on(standby, high_position)
        set_replay(standby, paused=True)
        low.commit()
    finally:
        low.close()
    try:
        assert not visible_on(standby, low_position)
        sub = subscribe(primary, after=start, replica=standby, poll_interval=0.2)
        got: list[int] = []
        arrived: list[float] = []

        def follow() -> None:
            for event in sub:
                got.append(event.position)
                arrived.append(time.monotonic())

        resumed = threading.Timer(1.0, set_replay, args=(standby, False))
        follower = threading.Thread(target=follow)
        began = time.monotonic()
        resumed.start()
        follower.start()
        deadline = began + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # a third event would show now
        sub.stop()
        follower.join(5)
        resumed.join()
    finally:
        set_replay(standby, paused=False)
    assert got == [low_position, high_position], "the standby's order, or a skipped event"
    assert arrived[0] - began >= 0.9, "delivered before the standby replayed the fence"

    # paused for longer than replica_timeout: an error that names the lag, nothing delivered
    set_replay(standby, paused=True)
    try:
        with Session(primary) as s:
            EventStore(s).append(Event("Late", tags=["lag"]))
            s.commit()
        sub = subscribe(primary, after=high_position, replica=standby, replica_timeout=0.3)
        with pytest.raises(ReplicaLagError) as caught:
            next(sub)
        sub.close()
    finally:
        set_replay(standby, paused=False)
    assert caught.value.lag_bytes and caught.value.lag_bytes > 0
    assert caught.value.timeout == 0.3 and "replayed up to" in str(caught.value)


def test_a_fence_past_the_flushed_wal_is_flushed_not_waited_for(
    primary: Engine, standby: Engine, pair: ReplicaPair
) -> None:
    """WAL written after the last commit, never flushed while the primary is idle.

    The fence (the insert position) lies past it; standbys receive flushed WAL only, and this
    primary's WAL writer waits 10 s between rounds. Without the follower making the primary
    flush, this wait would last until the WAL writer's or another commit's flush.
    """
    start = head(primary)
    with Session(primary) as s:
        EventStore(s).append(Event("Idle", tags=["flush"]))
        s.commit()
    pair.wait_for_standby()
    with primary.connect() as conn:  # a non-transactional record: not flushed by anyone
        conn.execute(text("SELECT pg_logical_emit_message(false, 'dcb-test', 'unflushed')"))
        conn.commit()
        flushed, inserted = conn.execute(
            text("SELECT pg_current_wal_flush_lsn(), pg_current_wal_insert_lsn()")
        ).one()
    assert flushed != inserted
    sub = subscribe(primary, after=start, replica=standby, replica_timeout=5)
    began = time.monotonic()
    assert next(sub).position == start + 1
    sub.close()
    assert time.monotonic() - began < 2


def test_following_a_standby_without_its_primary_is_refused(
    primary: Engine, standby: Engine, pair: ReplicaPair, capsys: pytest.CaptureFixture[str]
) -> None:
    with Session(primary) as s:
        EventStore(s).append(Event("E", tags=["alone"]))
        s.commit()
    pair.wait_for_standby()
    sub = subscribe(standby)
    with pytest.raises(StandbyWithoutPrimaryError) as caught:
        next(sub)
    sub.close()
    assert caught.value.role == "engine" and caught.value.replayed_lsn
    assert "replica=" in str(caught.value)
    with pytest.raises(StandbyWithoutPrimaryError):  # the standby named as the primary
        next(subscribe(standby, replica=standby))
    with pytest.raises(StandbyWithoutPrimaryError):
        ProjectionRunner(standby, "alone", lambda _s, _e: None).run_once()
    with pytest.raises(StandbyWithoutPrimaryError):  # idle: nothing after its checkpoint
        ProjectionRunner(standby, "idle", lambda _s, _e: None, Query.of(tags=["none"])).run_once()
    # a standby whose sessions default to SERIALIZABLE (set after the engine's first connect,
    # as a database default changed later would be) refuses every statement at AUTOCOMMIT
    # (0A000), the followers' one-statement polls included: still the standby's own error
    serial = create_engine(pair.standby_url)

    @event.listens_for(serial, "connect")
    def default_serializable(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("SET default_transaction_isolation = 'serializable'")
        dbapi_conn.commit()

    try:
        with pytest.raises(StandbyWithoutPrimaryError):
            next(subscribe(serial))
        with pytest.raises(StandbyWithoutPrimaryError):
            ProjectionRunner(serial, "s", lambda _s, _e: None, Query.of(tags=["none"])).run_once()
    finally:
        serial.dispose()
    with Session(standby) as s, pytest.raises(StandbyWithoutPrimaryError):
        next(EventStore(s).stream())
    assert cli_main(["--url", pair.standby_url, "tail", "--count", "1"]) == 1
    assert "hot standby" in capsys.readouterr().err


def test_tail_reads_on_the_replica(
    primary: Engine, pair: ReplicaPair, capsys: pytest.CaptureFixture[str]
) -> None:
    start = head(primary)
    with Session(primary) as s:
        EventStore(s).append([Event("Tailed", tags=["tail:1"]), Event("Tailed", tags=["tail:2"])])
        s.commit()
    argv = ["--url", pair.primary_url, "tail", "--after", str(start), "--count", "2"]
    assert cli_main([*argv, "--replica-url", pair.standby_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [str(start + 1), str(start + 2)]
