"""A hot tag (on 5% of the events or more, by the statistics) takes its own paths in read_v1 and
append_v4: they must answer exactly what the tag index would."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import AppendCondition, ConditionFailedError, Event, EventStore, Query, QueryItem
from dcb_store.bench.seed import seed_events

N = 3_000


@pytest.fixture
def hot_store(engine: Engine) -> Engine:
    # entity:<i % 2> on every event (both hot), seed:<i> on each; then a few typed events
    seed_events(engine, N, progress=False, per_tag=N // 2)
    with Session(engine) as session:
        store = EventStore(session)
        for i in range(20):
            store.append(Event("Typed" if i % 3 else "Other", {"i": i}, ["entity:0", f"x:{i}"]))
        session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE dcb.events"))
        hot = conn.execute(text("SELECT dcb.tags_are_hot_v1(ARRAY['entity:0'])")).scalar_one()
    assert hot, "the statistics must call entity:0 hot for these paths to run"
    return engine


def _expected(engine: Engine, tag: str, types: list[str] | None = None) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT position FROM dcb.events WHERE tags @> ARRAY[CAST(:t AS text)] "
                "AND (CAST(:y AS text[]) IS NULL OR type = ANY (CAST(:y AS text[]))) "
                "ORDER BY position"
            ),
            {"t": tag, "y": types},
        )
        return [r[0] for r in rows]


@pytest.mark.parametrize("types", [None, ["Typed"]])
def test_hot_tag_reads_match_the_tag_index(hot_store: Engine, types: list[str] | None) -> None:
    expected = _expected(hot_store, "entity:0", types)
    query = Query.of(types=types or [], tags=["entity:0"])
    with Session(hot_store) as session:
        store = EventStore(session)
        for after in (0, 1, expected[len(expected) // 2], expected[-2], expected[-1]):
            for limit in (None, 1, 7, 100):
                forward = [e.position for e in store.read(query, after=after, limit=limit).events]
                assert forward == [p for p in expected if p > after][:limit], (after, limit)
                backward = store.read(query, after=after, limit=limit, backwards=True)
                want = [p for p in reversed(expected) if p > after][:limit]
                assert [e.position for e in backward.events] == want, (after, limit)
        # many items, one of them hot: the per-item path
        hot = _expected(hot_store, "entity:0")
        many = Query([QueryItem(tags=["entity:0"]), QueryItem(tags=["seed:5"])])
        for after in (0, hot[-5]):
            got = [e.position for e in store.read(many, after=after).events]
            assert got == sorted(set(_expected(hot_store, "seed:5") + hot) - set(range(after + 1)))


@pytest.mark.parametrize("types", [[], ["Typed"]])
def test_conditions_on_a_hot_tag_see_every_match(hot_store: Engine, types: list[str]) -> None:
    expected = _expected(hot_store, "entity:0", types or None)
    query = Query.of(types=types, tags=["entity:0"])
    with Session(hot_store) as session:
        store = EventStore(session)
        for after in (0, expected[-2]):
            with pytest.raises(ConditionFailedError) as failed:
                store.append(Event("Typed", {}, ["entity:0"]), AppendCondition(query, after))
            assert failed.value.position == next(p for p in expected if p > after)
        head = store.read(query, backwards=True, limit=1).head
        assert store.append(Event("Typed", {}, ["entity:0"]), AppendCondition(query, head))
        session.rollback()
