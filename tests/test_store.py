"""What PostgreSQL's store does beyond the contract that every store passes.

The contract's scenarios (appends, reads and their options on every query shape, heads,
conditions, ids, projections, streams, rejected input) live in ``dcb_store.contract`` and run on
every store in ``tests/test_contract.py``.
"""

from __future__ import annotations

from dcb_store import Event, EventStore, Query
from tests.factories import EventFactory


def test_factories_build_valid_events(store: EventStore) -> None:
    events = EventFactory.build_batch(6)
    last = store.append(events)
    assert len(store.read(Query.of(tags=["course:c1"]))) == 2
    assert store.read().head == last


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
