"""Consistency under concurrency: the seven guarantees of docs/consistency.md, each a stress
test on real PostgreSQL with real threads, real connections and random timing.

Each of these tests fails when its mechanism is removed (see docs/consistency.md, "How the
tests were shown to bite").
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    ConditionFailedError,
    DeadlockError,
    Event,
    EventStore,
    LockTimeoutError,
    Query,
    QueryItem,
)
from tests.concurrency import ISOLATION_LEVELS, jitter, race, run_unit

RACERS = 6
SHAPES = ["tag", "type", "multi"]


def shape_of(shape: str, key: str, i: int) -> tuple[Query, Event]:
    """The shared condition query of a race, and racer i's event, which matches it."""
    if shape == "tag":
        return Query.of(tags=[f"course:{key}"]), Event(
            "Subscribed", {"i": i}, [f"course:{key}", f"student:{i}"]
        )
    if shape == "type":
        return Query.of(types=[f"Invoice{key}"]), Event(f"Invoice{key}", {"i": i}, [f"invoice:{i}"])
    query = Query([QueryItem(tags=[f"course:{key}"]), QueryItem(types=[f"Closed{key}"])])
    ev = (
        Event("Subscribed", {"i": i}, [f"course:{key}"])
        if i % 2
        else Event(f"Closed{key}", {"i": i})
    )
    return query, ev


def with_lock_tag(ev: Event, key: str) -> Event:
    return Event(ev.type, ev.data, (*ev.tags, f"lock:course:{key}"))


# 1. Linearizable conditions -------------------------------------------------------------

MATRIX = list(itertools.product(ISOLATION_LEVELS, ["fresh", "snapshot"], [False, True], SHAPES))
# at AUTOCOMMIT the read and the append are transactions of their own: "fresh" only
MATRIX += list(itertools.product(["AUTOCOMMIT"], ["fresh"], [False, True], SHAPES))


@pytest.mark.parametrize(("isolation", "txn", "lock_tags", "shape"), MATRIX)
def test_overlapping_conditions_exactly_one_commits(
    engine: Engine, isolation: str, txn: str, lock_tags: bool, shape: str
) -> None:
    for round_ in range(4):
        key = f"r{round_}"
        with Session(engine) as s:
            head = EventStore(s).read(shape_of(shape, key, 0)[0]).head
        decided = threading.Barrier(RACERS)  # every racer decides from the same facts

        def make_work(i: int):  # type: ignore[no-untyped-def]
            query, ev = shape_of(shape, key, i)
            if lock_tags:
                ev = with_lock_tag(ev, key)

            def work(store: EventStore, session: Session) -> None:
                after = head
                if txn == "snapshot":
                    session.execute(text("SELECT count(*) FROM dcb.events"))  # takes the snapshot
                    after = store.read(query).head
                decided.wait(10)
                jitter()
                store.append(ev, AppendCondition(query, after))

            return lambda: run_unit(engine, isolation, work)

        outcome = race(RACERS, make_work)
        assert not outcome.errors, outcome.errors
        assert outcome.commits == 1, f"round {round_}: {outcome.commits} commits"
        assert outcome.conflicts == RACERS - 1


# 2. Safe heads ----------------------------------------------------------------------------


def test_head_never_hides_an_in_flight_event_committing_below_it(engine: Engine) -> None:
    query = Query.of(tags=["course:c1"])
    with Session(engine) as s:
        seed = EventStore(s).append(Event("CourseDefined", tags=["course:c1"]))
        s.commit()
    slow = Session(engine)
    low = EventStore(slow).append(Event("Subscribed", tags=["course:c1"]))  # in flight
    with Session(engine) as s:
        high = EventStore(s).append(Event("Subscribed", tags=["course:c1"]))
        s.commit()
    assert high > low
    with Session(engine) as s:
        result = EventStore(s).read(query)
        assert result.head == seed < low
        assert [e.position for e in result] == [seed]
        unrelated = EventStore(s).read(Query.of(tags=["course:other"]))
        assert unrelated.head == high  # a writer of other keys does not hold this read back
    slow.commit()
    slow.close()
    with Session(engine) as s:
        with pytest.raises(ConditionFailedError) as info:
            EventStore(s).append(
                Event("Subscribed", tags=["course:c1"]), AppendCondition(query, result.head)
            )
        assert info.value.position == low


def test_heads_are_safe_under_random_out_of_order_commits(engine: Engine) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            while not stop.is_set():
                with Session(engine) as s:
                    EventStore(s).append(Event("E", {"w": i}, [f"k:{random.randint(0, 3)}"]))
                    jitter(8)
                    s.commit()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    reads = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        query = Query.of(tags=[f"k:{random.randint(0, 3)}"]) if random.random() < 0.5 else None
        with Session(engine) as s:
            result = EventStore(s).read(query)
            reads.append((query, result.head, {e.position for e in result}))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    with Session(engine) as s:
        final = EventStore(s).read()
    assert len(reads) > 20 and len(final) > 50
    for query, head, seen in reads:
        expected = {
            e.position
            for e in final
            if head is not None
            and e.position <= head
            and (query is None or query.matches(e.type, e.tags))
        }
        assert expected == seen, f"a read with head {head} missed {sorted(expected - seen)}"


# 3. Followers never skip ------------------------------------------------------------------


def test_follower_sees_every_event_exactly_once_in_order(engine: Engine) -> None:
    stop = threading.Event()
    total = 0
    count_lock = threading.Lock()

    def writer() -> None:
        nonlocal total
        for _ in range(40):
            with Session(engine) as s:
                n = random.randint(1, 3)
                EventStore(s).append(
                    [Event("E", tags=[f"w:{random.randint(0, 5)}"]) for _ in range(n)]
                )
                jitter(10)  # commit out of position order
                s.commit()
            with count_lock:
                total += n

    seen: list[int] = []

    def follower() -> None:
        last = None
        while True:
            finished = stop.is_set()
            with Session(engine) as s:
                result = EventStore(s).read(after=last, limit=random.choice([None, 3, 10]))
            seen.extend(e.position for e in result)
            if result.head is not None and len(result):
                last = (
                    result.events[-1].position
                    if result.head is None
                    else max(last or 0, result.events[-1].position)
                )
            if finished and not len(result):
                return

    writers = [threading.Thread(target=writer) for _ in range(6)]
    follow = threading.Thread(target=follower)
    follow.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    follow.join(30)
    assert len(seen) == total, f"follower saw {len(seen)} of {total}"
    assert seen == sorted(set(seen)), "duplicates or out of order"


# 4. No global serialization -------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ"])
def test_unrelated_conditional_appends_never_conflict(engine: Engine, isolation: str) -> None:
    for round_ in range(3):

        def make_work(i: int):  # type: ignore[no-untyped-def]
            query = Query.of(tags=[f"user:{round_}-{i}"])

            def work(store: EventStore, session: Session) -> None:
                head = store.read(query).head
                jitter()
                store.append(
                    Event(
                        "Registered", {"i": i}, [f"user:{round_}-{i}", f"lock:user:{round_}-{i}"]
                    ),
                    AppendCondition(query, head),
                )

            return lambda: run_unit(engine, isolation, work)

        outcome = race(20, make_work)
        assert not outcome.errors, outcome.errors
        assert (outcome.commits, outcome.conflicts) == (20, 0)


def test_an_open_transaction_does_not_block_unrelated_appends(engine: Engine) -> None:
    holder = Session(engine)
    EventStore(holder).append(
        Event("A", tags=["lock:course:c1", "student:s1"]),
        AppendCondition(Query.of(tags=["course:c1"])),
    )
    with Session(engine) as s:
        started = time.monotonic()
        EventStore(s, lock_timeout=1).append(
            Event("A", tags=["lock:course:c2", "student:s2"]),
            AppendCondition(Query.of(tags=["course:c2"])),
        )
        EventStore(s, lock_timeout=1).append(
            Event("A", tags=["student:s1"])
        )  # shared with the holder
        s.commit()
        assert time.monotonic() - started < 1
    holder.rollback()
    holder.close()


# 5. No deadlocks --------------------------------------------------------------------------


def test_random_overlapping_locks_and_conditions_never_deadlock(engine: Engine) -> None:
    keys = [f"k:{i}" for i in range(6)]

    def make_work(i: int):  # type: ignore[no-untyped-def]
        def work(store: EventStore, session: Session) -> None:
            for _ in range(3):
                tags = random.sample(keys, 3)
                events = [
                    Event("E", {"i": i}, [f"lock:{tags[0]}", tags[1]]),
                    Event("F", tags=[f"lock:{tags[2]}"]),
                ]
                cond = AppendCondition(Query([QueryItem(tags=[t]) for t in random.sample(keys, 2)]))
                with contextlib.suppress(ConditionFailedError):
                    store.append(
                        list(reversed(events)) if random.random() < 0.5 else events,
                        cond if random.random() < 0.5 else None,
                    )
                return  # one append per transaction: a single global lock order

        return lambda: run_unit(engine, "READ COMMITTED", work)

    for _ in range(10):
        outcome = race(12, make_work)
        assert not [e for e in outcome.errors if isinstance(e, DeadlockError)]
        assert not outcome.errors, outcome.errors


# 6. Lock hygiene --------------------------------------------------------------------------


@pytest.mark.parametrize("lock_tags", [False, True])
def test_a_huge_batch_of_unique_keys_takes_a_bounded_number_of_locks(
    engine: Engine, lock_tags: bool
) -> None:
    prefix = "lock:" if lock_tags else ""
    events = [Event("Imported", {"i": i}, [f"{prefix}item:{i}"]) for i in range(10_000)]
    with Session(engine) as s:
        store = EventStore(s)
        store.append(events, AppendCondition(Query.of(types=["Imported"])))
        assert store.lock_count() <= 260
        # the coarse key still serializes it with conditional appends on any of its keys
        with Session(engine) as other, pytest.raises(LockTimeoutError):
            EventStore(other).append(
                Event("X", tags=["item:5"]),
                AppendCondition(Query.of(tags=["item:5"])),
                lock_timeout=0.2,
            )
        s.commit()
    with Session(engine) as s:
        assert len(EventStore(s).read(Query.of(tags=["item:9999"]))) == 1
        assert EventStore(s).lock_count() == 0


# 7. Hash collisions cost only waiting (colliding_engine: conftest.py) ----------------------


def test_collisions_do_not_change_answers(colliding_engine: Engine) -> None:
    with Session(colliding_engine) as s:
        keys = {
            lock.key
            for lock in (
                EventStore(s).append(Event("A", tags=["a:1", "b:2", "c:3", "d:4", "e:5"]))
                and EventStore(s).lock_stats()
            )
            if lock.kind == "key"
        }
        assert len(keys) <= 4  # the hash space really is tiny
        s.rollback()
    for isolation in ("READ COMMITTED", "REPEATABLE READ"):
        # unrelated keys that now collide: all commit (they only waited)
        def unrelated(i: int):  # type: ignore[no-untyped-def]
            q = Query.of(tags=[f"u:{isolation}{i}"])
            return lambda: run_unit(
                colliding_engine,
                isolation,
                lambda st, _s: st.append(
                    Event("U", tags=[f"u:{isolation}{i}"]), AppendCondition(q, st.read(q).head)
                ),
            )

        outcome = race(8, unrelated)
        if isolation == "READ COMMITTED":
            assert not outcome.errors and outcome.commits == 8, (isolation, outcome)
        else:
            # under a transaction snapshot the write traces are keyed by the same hash: a
            # collision may also refuse (retryable), never let two overlapping decisions through
            assert not outcome.errors and outcome.commits >= 1, (isolation, outcome)

        # overlapping keys: still exactly one
        decided = threading.Barrier(8)

        def overlapping(i: int):  # type: ignore[no-untyped-def]
            q = Query.of(tags=[f"o:{isolation}"])

            def work(st: EventStore, _s: Session) -> None:
                head = st.read(q).head
                decided.wait(10)
                st.append(Event("O", tags=[f"o:{isolation}"]), AppendCondition(q, head))

            return lambda: run_unit(colliding_engine, isolation, work)

        outcome = race(8, overlapping)
        assert not outcome.errors and outcome.commits == 1, (isolation, outcome)


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_followers_handed_a_snapshot_engine_still_see_everything_once(
    engine: Engine, isolation: str
) -> None:
    """subscribe() and ProjectionRunner open their own transactions: they read at READ
    COMMITTED whatever level the engine they are handed is configured for."""
    from dcb_store import ProjectionRunner, subscribe

    snapshot_engine = engine.execution_options(isolation_level=isolation)
    writers_done = threading.Event()
    total = 0
    count_lock = threading.Lock()

    def writer() -> None:
        nonlocal total
        for _ in range(25):
            with Session(engine) as s:
                n = random.randint(1, 3)
                EventStore(s).append([Event("E", tags=["w:1"]) for _ in range(n)])
                jitter(10)  # commit out of position order
                s.commit()
            with count_lock:
                total += n

    applied: list[int] = []
    runner = ProjectionRunner(
        snapshot_engine, "rr-runner", lambda _s, evs: applied.extend(e.position for e in evs)
    )
    seen: list[int] = []
    sub = subscribe(snapshot_engine, poll_interval=0.05, busy_interval=0.01)

    def follow() -> None:
        for ev in sub:
            seen.append(ev.position)

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=writer) for _ in range(4)]
    for t in writers:
        t.start()
    while any(t.is_alive() for t in writers):
        runner.run_once()
    for t in writers:
        t.join()
    writers_done.set()
    while runner.run_once():
        pass
    deadline = time.monotonic() + 10
    while len(seen) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.stop()
    follower.join(10)
    assert seen == sorted(set(seen)) and len(seen) == total, (len(seen), total)
    assert applied == sorted(set(applied)) and len(applied) == total, (len(applied), total)
