"""The store's contract on real PostgreSQL: appends, reads, queries, heads, conditions, streams."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    ConcurrencyError,
    ConditionFailedError,
    DuplicateEventIdError,
    Event,
    EventStore,
    InvalidInputError,
    Query,
    QueryItem,
)
from tests.factories import EventFactory
from tests.helpers import count_events


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
