"""The store contract: one suite of scenarios that every store passes alike.

This library runs :class:`StoreContract` on :class:`~dcb_store.EventStore`,
:class:`~dcb_store.AsyncEventStore` (through :class:`~dcb_store.testing.BlockingStore`) and
:class:`~dcb_store.testing.InMemoryEventStore` (``tests/test_contract.py``); host apps import it
from :mod:`dcb_store.testing`. The module needs no pytest import; the pytest plugin has pytest
rewrite its asserts, so that a failing scenario shows its values.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from dcb_store.conditions import AppendCondition
from dcb_store.deciding import Projection
from dcb_store.errors import (
    ConcurrencyError,
    ConditionFailedError,
    DuplicateEventIdError,
    InvalidInputError,
)
from dcb_store.events import Event
from dcb_store.limits import MAX_BATCH_EVENTS
from dcb_store.locks import LockInfo
from dcb_store.protocols import EventStoreLike
from dcb_store.queries import Query, QueryItem

__all__ = ["StoreContract"]

E = TypeVar("E", bound=BaseException)


class _Raised(Generic[E]):
    value: E


@contextmanager
def _raises(expected: type[E], what: object = "") -> Iterator[_Raised[E]]:
    """``pytest.raises`` without pytest: the error is in ``.value`` after the block."""
    raised: _Raised[E] = _Raised()
    try:
        yield raised
    except expected as exc:
        raised.value = exc
        return
    raise AssertionError(f"DID NOT RAISE {expected.__name__} {what}".rstrip())


# Query shapes for the read options: every kind of item, a union, and one that matches nothing.
_SHAPES: dict[str, Query | None] = {
    "none": None,
    "all": Query.all(),
    "tag": Query.of(tags=["t:a"]),
    "two tags": Query.of(tags=["t:a", "t:b"]),
    "tag and type": Query.of(types=["X"], tags=["t:b"]),
    "type only": Query.of(types=["Y", "Z"]),
    "or": Query([QueryItem(types=["Z"]), QueryItem(tags=["t:c"])]),
    "no match": Query.of(tags=["t:nothing"]),
}


class StoreContract:
    """The scenarios every store passes: subclass it with a ``store`` fixture to run them all.

    Each scenario is a test method that takes a ``store`` fixture (an
    :class:`~dcb_store.protocols.EventStoreLike`), starts from an empty store, and asserts
    positions relative to the ones its appends return (a PostgreSQL sequence does not restart
    at 1). Name the subclass so that pytest collects it (``Test...``)::

        class TestOurStore(StoreContract):
            @pytest.fixture
            def store(self, dcb_session):  # the plugin's Session, rolled back after each test
                return OurTenantStore(EventStore(dcb_session), tenant="t1")

    An async store runs it as ``BlockingStore(AsyncEventStore(session), runner)``.
    """

    def test_positions_order_and_heads(self, store: EventStoreLike) -> None:
        """Positions rise by one per event; a read returns events in order with its head."""
        empty = store.read()
        assert len(empty) == 0 and empty.head is None and store.head() is None
        first = store.append(Event("A", {"i": 1}, ["k:1"]))
        last = store.append([Event("B", [1, "two", None], ["k:2"]), Event("C", tags=["lock:k:1"])])
        assert last == first + 2
        result = store.read()
        assert [e.type for e in result] == ["A", "B", "C"] and len(result) == 3
        assert [e.position for e in result] == [first, first + 1, last]
        assert result.head == last and store.head() == last
        assert result[1].event.data == [1, "two", None]
        assert result[2].tags == ("k:1",)  # lock: stripped
        assert store.read(Query.of(tags=["k:1"]), limit=1).head == first
        # without a limit the head is the store's, even when nothing matches
        assert store.read(Query.of(tags=["k:nothing"])).head == last
        assert store.read(after=last, limit=5).head is None

    def test_read_after_limit_and_backwards(self, store: EventStoreLike) -> None:
        """``after`` skips, ``limit`` cuts (and bounds the head), ``backwards`` reverses."""
        positions = [store.append(Event("E", {"i": i}, ["k:v"])) for i in range(5)]
        assert [e.position for e in store.read(backwards=True)] == positions[::-1]
        assert [e.position for e in store.read(after=positions[1])] == positions[2:]
        limited = store.read(limit=2)
        assert [e.position for e in limited] == positions[:2] and limited.head == positions[1]
        assert store.read(after=positions[-1], limit=3).head is None
        assert store.read(limit=0).head is None
        back = store.read(backwards=True, limit=2, after=positions[0])
        assert [e.position for e in back] == positions[:-3:-1]

    def test_read_options_on_every_query_shape(self, store: EventStoreLike) -> None:
        """``after`` x ``limit`` x ``backwards`` on every query shape select the same events."""
        rng = random.Random(7)
        tags = ["t:a", "t:b", "t:c", "t:d"]
        events = [
            Event(rng.choice("XYZ"), {"i": i}, rng.sample(tags, rng.randint(0, 3)))
            for i in range(40)
        ]
        last = store.append(events)
        positions = list(range(last - 39, last + 1))
        for shape, query in _SHAPES.items():
            matching = [
                p
                for p, e in zip(positions, events, strict=True)
                if query is None or query.matches(e.type, e.tags)
            ]
            for after in (None, positions[12]):
                for limit in (None, 3, 100):
                    for backwards in (False, True):
                        case = (shape, after, limit, backwards)
                        expected = [p for p in matching if after is None or p > after]
                        expected = expected[::-1] if backwards else expected
                        expected = expected if limit is None else expected[:limit]
                        result = store.read(query, after=after, limit=limit, backwards=backwards)
                        assert [e.position for e in result] == expected, case
                        if limit is not None and not backwards:
                            assert result.head == (expected[-1] if expected else None), case
                        else:
                            assert result.head == last, case

    def test_query_items_are_or_and_an_item_is_and(self, store: EventStoreLike) -> None:
        """An item matches all of its tags and one of its types; a query any of its items."""
        store.append(
            [
                Event("A", tags=["a:1", "b:1"]),
                Event("A", tags=["a:1"]),
                Event("B", tags=["b:1"]),
                Event("C", tags=[]),
            ]
        )

        def types(query: Query) -> list[str]:
            return [e.type + ",".join(e.tags) for e in store.read(query)]

        assert types(Query.of(tags=["a:1", "b:1"])) == ["Aa:1,b:1"]
        assert types(Query.of(tags=["a:1"])) == ["Aa:1,b:1", "Aa:1"]
        assert types(Query.of(types=["A"], tags=["b:1"])) == ["Aa:1,b:1"]
        assert types(Query.of(types=["B", "C"])) == ["Bb:1", "C"]
        assert types(Query([QueryItem(types=["C"]), QueryItem(tags=["b:1"])])) == [
            "Aa:1,b:1",
            "Bb:1",
            "C",
        ]
        assert len(store.read(Query.all())) == 4
        assert len(store.read(Query([QueryItem(types=["Z"]), QueryItem()]))) == 4

    def test_a_condition_fails_on_a_later_match_and_stores_nothing(
        self, store: EventStoreLike
    ) -> None:
        """A matching event after ``after`` fails the append; it takes no position."""
        query = Query([QueryItem(tags=["a:1"]), QueryItem(types=["Closed"])])
        head = store.read(query).head
        pos = store.append(Event("Opened", tags=["a:1"]), AppendCondition(query, head))
        with _raises(ConditionFailedError) as info:
            store.append(Event("Closed"), AppendCondition(query, head))
        error = info.value
        assert isinstance(error, ConcurrencyError) and error.retryable
        assert error.position == pos and error.after == head
        assert store.append(Event("Other", tags=["b:1"]), AppendCondition(query, pos)) == pos + 1
        either = Query([QueryItem(tags=["z:1"]), QueryItem(tags=["b:1"])])  # items are OR
        with _raises(ConditionFailedError) as info:
            store.append(Event("X"), AppendCondition(either, pos))
        assert info.value.position == pos + 1
        assert len(store.read()) == 2

    def test_a_condition_without_after_fails_on_any_match(self, store: EventStoreLike) -> None:
        """``after=None`` means from the beginning: any matching event fails it."""
        store.append(Event("UserRegistered", tags=["username:ann"]))
        taken = AppendCondition(Query.of(types=["UserRegistered"], tags=["username:ann"]))
        with _raises(ConditionFailedError) as info:
            store.append(Event("UserRegistered", tags=["username:ann"]), taken)
        assert info.value.after is None
        free = AppendCondition(Query.of(types=["UserRegistered"], tags=["username:bob"]))
        assert store.append(Event("UserRegistered", tags=["username:bob"]), free) > 0

    def test_event_ids_metadata_and_idempotent_batches(self, store: EventStoreLike) -> None:
        """Ids and metadata round-trip; a stored batch re-appended is a replay, not a copy."""
        eid = uuid.uuid4()
        store.append(Event("A", {"d": 1}, ["t:1"], metadata={"by": "me"}, id=eid))
        (event,) = store.read()
        assert event.event.id == eid and event.event.metadata == {"by": "me"}
        with _raises(DuplicateEventIdError):
            store.append([Event("A", id=uuid.uuid4()), Event("A", id=eid)])
        batch = [Event("A", {"i": i}, ["order:1"], id=uuid.uuid4()) for i in range(3)]
        condition = AppendCondition(Query.of(tags=["order:1"]))
        last = store.append(batch, condition)
        assert store.append(batch, condition) == last  # also when the condition would now fail
        assert store.append(batch) == last
        assert store.append([batch[-1]]) == last  # every id stored, in order: a replay
        with _raises(DuplicateEventIdError) as info:  # some stored, some new: a partial overlap
            store.append([batch[0], Event("B", id=uuid.uuid4())])
        assert info.value.position == last - 2
        with _raises(DuplicateEventIdError):  # the same ids in another order
            store.append(list(reversed(batch)))
        assert len(store.read()) == 4

    def test_project_folds_projections_into_a_condition(self, store: EventStoreLike) -> None:
        """``project`` answers several projections with one read and the decision's condition."""
        store.append(
            [
                Event("CourseDefined", {"capacity": 2}, ["course:c1"]),
                Event("Subscribed", tags=["course:c1"]),
                Event("Subscribed", tags=["course:c2"]),
            ]
        )
        course = ["course:c1"]
        capacity = Projection(
            Query.of(types=["CourseDefined"], tags=course), 0, lambda _c, e: e.data["capacity"]
        )
        taken = Projection(Query.of(types=["Subscribed"], tags=course), 0, lambda n, _e: n + 1)
        (cap, subscribed), condition = store.project([capacity, taken])
        assert (cap, subscribed) == (2, 1) and condition.after == store.read().head
        assert condition.fail_if_events_match == Query([*capacity.query.items, *taken.query.items])
        store.append(Event("Subscribed", tags=course), condition)
        with _raises(ConditionFailedError):
            store.append(Event("Subscribed", tags=course), condition)

    def test_bad_input_is_rejected_and_stores_nothing(self, store: EventStoreLike) -> None:
        """Every store validates alike: InvalidInputError (a ValueError), nothing stored."""
        one = uuid.UUID(int=1)
        calls: list[Callable[[], Any]] = [
            lambda: store.append([]),
            lambda: store.append([Event("A")] * (MAX_BATCH_EVENTS + 1)),
            lambda: store.append(["not an event"]),  # type: ignore[list-item]
            lambda: store.append([Event("A", id=one), Event("B", id=one)]),
            lambda: store.append(Event("A"), "a condition"),  # type: ignore[arg-type]
            lambda: store.append(Event("A"), lock_timeout=0),
            lambda: store.append(Event("A"), lock_timeout=-1),
            lambda: store.read(after=-1),
            lambda: store.read(limit=-5),
            lambda: store.read(limit=2**31),  # beyond a PostgreSQL integer
            lambda: store.read("course:c1"),  # type: ignore[arg-type]
            lambda: store.head("course:c1"),  # type: ignore[arg-type]
            lambda: list(store.stream(batch_size=0)),
        ]
        for i, call in enumerate(calls):
            with _raises(InvalidInputError, f"(call {i} of the list)") as info:
                call()
            assert isinstance(info.value, ValueError), i
        assert len(store.read()) == 0

    def test_stream_pages_through_everything_in_order(self, store: EventStoreLike) -> None:
        """``stream`` yields what an unlimited read returns, whatever the page size."""
        last = store.append([Event("A", {"i": i}, [f"k:{i % 3}"]) for i in range(25)])
        everything = [e.position for e in store.read()]
        assert [e.position for e in store.stream(batch_size=4)] == everything
        tagged = [e.data["i"] for e in store.stream(Query.of(tags=["k:1"]), batch_size=2)]
        assert tagged == [i for i in range(25) if i % 3 == 1]
        assert [e.position for e in store.stream(after=last - 5, batch_size=3)] == [
            last - 4 + i for i in range(5)
        ]
        assert list(store.stream(after=last)) == []

    def test_lock_monitoring_answers(self, store: EventStoreLike) -> None:
        """``lock_count`` and ``lock_stats`` answer on every store (no locks: 0 and [])."""
        store.append(Event("A", tags=["lock:m:1"]))
        assert store.lock_count() >= 0
        assert all(isinstance(info, LockInfo) for info in store.lock_stats())
