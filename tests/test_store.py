"""The store's contract on real PostgreSQL: appends, reads, queries, heads, input errors."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dcb_store import (
    AppendCondition,
    ConcurrencyError,
    ConditionFailedError,
    DcbStoreError,
    DuplicateEventIdError,
    Event,
    EventStore,
    InvalidInputError,
    LockTimeoutError,
    Query,
    QueryItem,
    SchemaMissingError,
)
from dcb_store.limits import MAX_BATCH_EVENTS
from tests.factories import EventFactory


def count_events(session: Session) -> int:
    return session.execute(text("SELECT count(*) FROM dcb.events")).scalar_one()


def test_append_returns_last_position_and_read_returns_events_in_order(store: EventStore) -> None:
    first = store.append(Event("A", {"i": 1}, ["x:1"]))
    last = store.append([Event("B", {"i": 2}, ["x:1"]), Event("C", [1, "two", None], ["x:2"])])
    assert last == first + 2
    result = store.read()
    assert [e.type for e in result] == ["A", "B", "C"]
    assert [e.position for e in result] == [first, first + 1, first + 2]
    assert result[2].event.data == [1, "two", None]
    assert len(result) == 3
    assert result.head == last


def test_read_backwards_after_and_limit(store: EventStore) -> None:
    positions = [store.append(Event("E", {"i": i}, ["k:v"])) for i in range(5)]
    assert [e.position for e in store.read(backwards=True)] == positions[::-1]
    assert [e.position for e in store.read(after=positions[1])] == positions[2:]
    limited = store.read(limit=2)
    assert [e.position for e in limited] == positions[:2]
    assert limited.head == positions[1]
    assert store.read(after=positions[-1], limit=3).head is None
    assert store.read(limit=0).head is None
    back = store.read(backwards=True, limit=2, after=positions[0])
    assert [e.position for e in back] == positions[:-3:-1]


def test_empty_store_has_no_head(store: EventStore) -> None:
    result = store.read()
    assert len(result) == 0 and result.head is None
    assert store.head() is None


def test_query_items_are_or_and_an_item_is_and(store: EventStore) -> None:
    store.append(
        [
            Event("A", tags=["a:1", "b:1"]),
            Event("A", tags=["a:1"]),
            Event("B", tags=["b:1"]),
            Event("C", tags=[]),
        ]
    )
    types = lambda q: [e.type + ",".join(e.tags) for e in store.read(q)]  # noqa: E731
    assert types(Query.of(tags=["a:1", "b:1"])) == ["Aa:1,b:1"]
    assert types(Query.of(tags=["a:1"])) == ["Aa:1,b:1", "Aa:1"]
    assert types(Query.of(types=["A"], tags=["b:1"])) == ["Aa:1,b:1"]
    assert types(Query.of(types=["B", "C"])) == ["Bb:1", "C"]
    either = Query([QueryItem(types=["C"]), QueryItem(tags=["b:1"])])
    assert types(either) == ["Aa:1,b:1", "Bb:1", "C"]
    assert len(store.read(Query.all())) == 4
    assert len(store.read(Query([QueryItem(types=["Z"]), QueryItem()]))) == 4


def test_head_without_limit_is_the_store_head_even_when_nothing_matches(store: EventStore) -> None:
    last = store.append([Event("A", tags=["t:1"]), Event("B", tags=["t:2"])])
    result = store.read(Query.of(tags=["t:nothing"]))
    assert len(result) == 0 and result.head == last


def test_condition_fails_on_later_match_and_consumes_no_position(
    store: EventStore, session: Session
) -> None:
    query = Query.of(tags=["course:c1"])
    head = store.read(query).head
    first = store.append(Event("Subscribed", tags=["course:c1"]), AppendCondition(query, head))
    with pytest.raises(ConditionFailedError) as info:
        store.append(Event("Subscribed", tags=["course:c1"]), AppendCondition(query, head))
    assert isinstance(info.value, ConcurrencyError) and info.value.retryable
    assert info.value.position == first and info.value.after == head
    before = count_events(session)
    nxt = store.append(Event("Other", tags=["x:1"]))
    assert nxt == first + 1  # the failed append took no position
    assert count_events(session) == before + 1


def test_condition_after_none_fails_on_any_match(store: EventStore) -> None:
    store.append(Event("UserRegistered", tags=["username:ann"]))
    cond = AppendCondition(Query.of(types=["UserRegistered"], tags=["username:ann"]))
    with pytest.raises(ConditionFailedError):
        store.append(Event("UserRegistered", tags=["username:ann"]), cond)
    ok = AppendCondition(Query.of(types=["UserRegistered"], tags=["username:bob"]))
    assert store.append(Event("UserRegistered", tags=["username:bob"]), ok) > 0


def test_condition_multi_item_is_or(store: EventStore) -> None:
    h = store.append(Event("A", tags=["a:1"]))
    store.append(Event("B", tags=["b:1"]))
    cond = AppendCondition(Query([QueryItem(tags=["a:1"]), QueryItem(tags=["b:1"])]), h)
    with pytest.raises(ConditionFailedError) as info:
        store.append(Event("X"), cond)
    assert info.value.position == h + 1


def test_failed_append_leaves_the_transaction_usable(store: EventStore, session: Session) -> None:
    session.execute(text("CREATE TEMP TABLE app_rows (v int)"))
    session.execute(text("INSERT INTO app_rows VALUES (1)"))
    store.append(Event("A", tags=["k:1"]))
    with pytest.raises(ConditionFailedError):
        store.append(Event("A", tags=["k:1"]), AppendCondition(Query.of(tags=["k:1"])))
    session.execute(text("INSERT INTO app_rows VALUES (2)"))
    assert session.execute(text("SELECT count(*) FROM app_rows")).scalar_one() == 2
    assert count_events(session) == 1


def test_lock_tags_are_stored_without_prefix(store: EventStore) -> None:
    store.append(Event("A", tags=["lock:course:c1", "student:s1", "course:c1"]))
    (event,) = store.read(Query.of(tags=["course:c1"]))
    assert event.tags == ("course:c1", "student:s1")


def test_verbatim_text(store: EventStore) -> None:
    odd = [
        "it's",
        'quote"d',
        "'; DROP TABLE dcb.events; --",
        "ünïcødé:✓",
        "a:b:c",
        "%s %(x)s",
        "\\",
    ]
    store.append(Event("Type:'\"; --", {"k": odd}, odd))
    (event,) = store.read(Query.of(tags=odd))
    assert event.type == "Type:'\"; --" and list(event.tags) == odd and event.data == {"k": odd}


@pytest.mark.parametrize(
    "build",
    [
        lambda: Event(""),
        lambda: Event("x" * 256),
        lambda: Event("A", tags=[""]),
        lambda: Event("A", tags=["lock:"]),
        lambda: Event("A", tags=["a\x00b"]),
        lambda: Event("A\x00"),
        lambda: Event("A", {"k": "nul\x00"}),
        lambda: Event("A", {"k\x00": 1}),
        lambda: Event("A", {"k": float("nan")}),
        lambda: Event("A", {"k": object()}),
        lambda: Event("A", {1: 2}),
        lambda: Event("A", tags="course:c1"),
        lambda: Event("A", metadata={"m": "\x00"}),
        # lone surrogates: Python strings may hold them, UTF-8 text cannot (found by hypothesis)
        lambda: Event("A", {"k": "\ud800"}),
        lambda: Event("A", {"\udfff": 1}),
        lambda: Event("A", tags=["t:\ud800"]),
        lambda: Event("A\ud800"),
        lambda: QueryItem(tags=["t:\ud800"]),
        lambda: Query([]),
        lambda: QueryItem(tags=["lock:x"]),
        lambda: QueryItem(types=[""]),
        lambda: AppendCondition(Query.all(), -1),
    ],
)
def test_bad_input_is_rejected_at_construction(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValidationError, ValueError)):
        build()


def test_bad_input_to_the_store_is_rejected_and_stores_nothing(
    store: EventStore, session: Session
) -> None:
    for call in (
        lambda: store.append([]),
        lambda: store.append([Event("A")] * (MAX_BATCH_EVENTS + 1)),
        lambda: store.append(["not an event"]),  # type: ignore[list-item]
        lambda: store.append([Event("A", id=uuid.UUID(int=1)), Event("B", id=uuid.UUID(int=1))]),
        lambda: store.append(Event("A"), lock_timeout=0),
        lambda: store.append(Event("A"), lock_timeout=-1),
        lambda: store.read(after=-1),
        lambda: store.read(limit=-5),
        lambda: store.read("course:c1"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, DcbStoreError)
    assert count_events(session) == 0
    with pytest.raises(TypeError):
        EventStore(object())  # type: ignore[arg-type]


def test_metadata_and_ids_round_trip_and_duplicate_ids_are_rejected(
    store: EventStore, session: Session
) -> None:
    eid = uuid.uuid4()
    store.append(Event("A", {"d": 1}, ["t:1"], metadata={"by": "me"}, id=eid))
    (event,) = store.read()
    assert event.event.id == eid and event.event.metadata == {"by": "me"}
    with pytest.raises(DuplicateEventIdError):
        store.append([Event("A", id=uuid.uuid4()), Event("A", id=eid)])
    store.append(Event("B"))  # the transaction is still usable
    assert count_events(session) == 2


def test_factories_build_valid_events(store: EventStore) -> None:
    events = EventFactory.build_batch(6)
    last = store.append(events)
    assert len(store.read(Query.of(tags=["course:c1"]))) == 2
    assert store.read().head == last


def test_missing_schema_says_to_run_the_migrations(server_url: str) -> None:
    eng = create_engine(server_url)
    with Session(eng) as s, pytest.raises(SchemaMissingError, match="upgrade"):
        EventStore(s).append(Event("A"))
    eng.dispose()


# ---- committed data, several connections ------------------------------------------------


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
    assert "dcb.append_v3" in (waiting[0].query or "")
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


def test_stream_pages_through_everything_in_order(store: EventStore) -> None:
    first = store.append([Event("A", {"i": i}, [f"k:{i % 3}"]) for i in range(25)])
    assert [e.position for e in store.stream(batch_size=4)] == [e.position for e in store.read()]
    tagged = [e.data["i"] for e in store.stream(Query.of(tags=["k:1"]), batch_size=2)]
    assert tagged == [i for i in range(25) if i % 3 == 1]
    assert len(list(store.stream(after=first - 5, batch_size=3))) == 5
    with pytest.raises(InvalidInputError):
        list(store.stream(batch_size=0))


def test_a_stream_builds_events_lazily_and_shares_the_transaction(store: EventStore) -> None:
    # events are built as the consumer takes them: appending on the same session mid-page,
    # or leaving a page half-read, must not disturb the stream or the connection
    first = store.append([Event("A", {"i": i}, ["lazy:1"]) for i in range(6)])
    seen = []
    for event in store.stream(Query.of(tags=["lazy:1"]), batch_size=4):
        seen.append(event.data["i"])
        if event.data["i"] == 1:
            store.append(Event("A", {"i": 100}, ["lazy:1"]))
    assert seen == [0, 1, 2, 3, 4, 5, 100]
    stream = store.stream(Query.of(tags=["lazy:1"]), batch_size=4)
    assert next(stream).position == first - 5
    stream.close()
    assert len(store.read(Query.of(tags=["lazy:1"]))) == 7


def test_async_store_shares_the_contract(fresh_db_url: str) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from dcb_store import AsyncEventStore, Projection

    async def scenario() -> None:
        engine = create_async_engine(fresh_db_url)
        async with AsyncSession(engine) as session:
            store = AsyncEventStore(session)
            head = (await store.read(Query.of(tags=["a:1"]))).head
            pos = await store.append(
                Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"]), head)
            )
            with pytest.raises(ConditionFailedError):
                await store.append(
                    Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"]), head)
                )
            assert [e.position async for e in store.stream(batch_size=1)] == [pos]
            counter = Projection(Query.of(tags=["a:1"]), 0, lambda n, _e: n + 1)
            (n,), cond = await store.project([counter])
            assert (
                n == 1 and cond.after == pos and cond.fail_if_events_match == Query.of(tags=["a:1"])
            )
            assert await store.head() == pos and await store.lock_count() > 0
            assert len(await store.lock_stats()) == await store.lock_count()
            await session.commit()
            with pytest.raises(InvalidInputError):
                await store.append([])
        await engine.dispose()

    asyncio.run(scenario())


def test_reappending_a_stored_batch_returns_its_original_position(
    store: EventStore, session: Session
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    batch = [Event("A", {"i": i}, ["order:1"], id=ids[i]) for i in range(3)]
    cond = AppendCondition(Query.of(tags=["order:1"]))
    last = store.append(batch, cond)
    assert store.append(batch, cond) == last  # also when the condition would now fail
    assert store.append(batch) == last
    assert count_events(session) == 3
    with pytest.raises(DuplicateEventIdError) as info:  # a partial overlap says so
        store.append([batch[0], Event("B", id=uuid.uuid4())])
    assert info.value.position == last - 2
    with pytest.raises(DuplicateEventIdError):  # same ids, other order
        store.append(list(reversed(batch)))
    assert count_events(session) == 3


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


def test_history_is_append_only_with_a_deliberate_escape_hatch(engine: Engine) -> None:
    from sqlalchemy.exc import DBAPIError

    with Session(engine) as s:
        EventStore(s).append([Event("A", {"pii": "x"}, ["user:1"]), Event("B")])
        s.commit()
    for statement in (
        "UPDATE dcb.events SET data = '{}'",
        "DELETE FROM dcb.events",
        "TRUNCATE dcb.events",
    ):
        with engine.connect() as conn:
            with pytest.raises(DBAPIError) as info:
                conn.execute(text(statement))
            assert info.value.orig.sqlstate == "DCB10"  # type: ignore[union-attr]
            conn.rollback()
    with engine.begin() as conn:
        conn.execute(text("SELECT dcb.allow_erasure_v1()"))
        conn.execute(text("DELETE FROM dcb.events WHERE 'user:1' = ANY (tags)"))
    with Session(engine) as s:
        assert [e.type for e in EventStore(s).read()] == ["B"]


SHAPES = {
    "none": None,
    "all": Query.all(),
    "tag": Query.of(tags=["t:a"]),
    "two tags": Query.of(tags=["t:a", "t:b"]),
    "tag and type": Query.of(types=["X"], tags=["t:b"]),
    "type only": Query.of(types=["Y", "Z"]),
    "or": Query([QueryItem(types=["Z"]), QueryItem(tags=["t:c"])]),
    "no match": Query.of(tags=["t:nothing"]),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_after_limit_backwards_on_every_query_shape(store: EventStore, shape: str) -> None:
    rng = __import__("random").Random(7)
    events = [
        Event(
            rng.choice("XYZ"), {"i": i}, rng.sample(["t:a", "t:b", "t:c", "t:d"], rng.randint(0, 3))
        )
        for i in range(40)
    ]
    last = store.append(events)
    positions = list(range(last - 39, last + 1))
    query = SHAPES[shape]
    matching = [
        p
        for p, e in zip(positions, events, strict=True)
        if query is None or query.matches(e.type, e.tags)
    ]
    for after in (None, positions[12]):
        for limit in (None, 3, 100):
            for backwards in (False, True):
                expected = [p for p in matching if after is None or p > after]
                expected = expected[::-1] if backwards else expected
                expected = expected if limit is None else expected[:limit]
                result = store.read(query, after=after, limit=limit, backwards=backwards)
                assert [e.position for e in result] == expected, (shape, after, limit, backwards)
                if limit is not None and not backwards:
                    assert result.head == (expected[-1] if expected else None)
                else:
                    assert result.head == last
