"""read_v1 since revision 0010 answers every query as revision 0007's body did.

Revision 0010 sets up a read of one query item in expressions instead of calling
check_items_v1 and query_key_names_v1 and parsing the items in an aggregate. Two things must
not change: what a read returns (rows, head, errors), and which writers its in-flight cap waits
for (the keys: any event that matches the item must carry one of them). The first is compared
call by call against revision 0007's body, over random and edge-case items; the second with a
writer held in flight while a later event commits above it.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from dcb_store import Event, EventStore, Query, _sql

TAGS = ["a", "b", "B", "course:c1", "é", "x" * 40, "hot"]
TYPES = ["Registered", "Enrolled", "Left"]
READ = "SELECT * FROM dcb.{fn}(CAST(:items AS jsonb), :after, :limit, :backwards)"
# items on the edges of what check_items_v1 accepts, and shapes the Python API never sends
EDGE_ITEMS: list[Any] = [
    [{}],
    [{"tags": []}],
    [{"types": []}],
    [{"tags": [], "types": []}],
    [{"tags": None}],
    [{"tags": [None]}],
    [{"tags": ["a", None]}],
    [{"tags": [None, None]}],
    [{"types": [None]}],
    [{"types": ["Registered", None, "Registered"]}],
    [{"tags": [1]}],
    [{"tags": [["a"]]}],
    [{"tags": [{"x": 1}]}],
    [{"tags": ["a"] * 100}],
    [{"tags": ["a"] * 101}],
    [{"types": ["Left"] * 101}],
    [{"types": ["Left"] * 101, "tags": ["a"] * 101}],
    [{"tags": "a"}],
    [{"types": "Left"}],
    [{"tags": {"a": 1}}],
    [{"types": 5, "tags": ["a"]}],
    [{"tags": ["a"], "other": 1}],
    [5],
    [None],
    [[]],
    ["a"],
    [],
    {},
    {"tags": ["a"]},
    "a",
    5,
    None,
    [{"tags": ["a"]}, {"tags": ["b"]}],
    [{"tags": ["a"]}, 5],
]


def _install_revision_7_body(engine: Engine) -> None:
    body = _sql.load("v7_read_v1.sql").replace("dcb.read_v1(", "dcb.read_v1_r7(", 1)
    with engine.begin() as conn:
        conn.execute(text(body))


def _seed(engine: Engine, rng: random.Random) -> None:
    events = []
    for i in range(400):
        tags = rng.sample(TAGS[:-1], rng.randint(0, 3))
        if i % 2 == 0:
            tags.append("hot")  # on half of the events: hot by the statistics
        events.append(Event(rng.choice(TYPES), {"i": i}, tags))
    with engine.connect() as conn:
        store = EventStore(conn)
        for start in range(0, len(events), 50):
            store.append(events[start : start + 50])
        conn.commit()
        conn.execute(text("ANALYZE dcb.events"))
        conn.commit()


def _random_items(rng: random.Random) -> Any:
    def item() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if rng.random() < 0.8:
            out["tags"] = rng.sample(TAGS, rng.randint(0, 3))
        if rng.random() < 0.5:
            out["types"] = rng.sample(TYPES, rng.randint(0, 2))
        if rng.random() < 0.03:
            out[rng.choice(["tags", "types"])] = [*out.get("tags", []), None]
        return out

    return [item() for _ in range(rng.choice([1, 1, 1, 1, 2, 3]))]


def _has_null(items: Any) -> bool:
    """Does a tag or type list of some item hold a JSON null (refused since revision 0010)?"""
    return isinstance(items, list) and any(
        isinstance(item, dict)
        and any(isinstance(item.get(k), list) and None in item[k] for k in ("tags", "types"))
        for item in items
    )


def _observe(conn: Connection, fn: str, items: Any, after: Any, limit: Any, back: bool) -> Any:
    params = {"items": json.dumps(items), "after": after, "limit": limit, "backwards": back}
    savepoint = conn.begin_nested()
    try:
        rows = conn.execute(text(READ.format(fn=fn)), params).all()
    except DBAPIError as exc:
        savepoint.rollback()
        return ("error", exc.orig.sqlstate, str(exc.orig).splitlines()[0])  # type: ignore[union-attr]
    savepoint.commit()
    return [tuple(r) for r in rows]


def test_reads_return_what_revision_7_returned(engine: Engine) -> None:
    rng = random.Random(20261125)
    _install_revision_7_body(engine)
    _seed(engine, rng)
    cases = [(items, None, None, False) for items in EDGE_ITEMS]
    for _ in range(600):
        cases.append(
            (
                _random_items(rng),
                rng.choice([None, 0, 37, 200, 399, 400, 10_000]),
                rng.choice([None, 0, 1, 5, 100]),
                rng.random() < 0.3,
            )
        )
    compared = one_item = errors = refused_nulls = 0
    with engine.connect() as conn:
        for items, after, limit, back in cases:
            new = _observe(conn, "read_v1", items, after, limit, back)
            old = _observe(conn, "read_v1_r7", items, after, limit, back)
            if _has_null(items) and old[0] != "error":
                # a null matched no event; now refused like an append's condition refuses it
                assert new[:2] == ("error", "22023") and "none of them null" in new[2], new
                refused_nulls += 1
            else:
                assert new == old, (items, after, limit, back)
            compared += 1
            one_item += isinstance(items, list) and len(items) == 1
            errors += new[0] == "error"
        conn.rollback()
    # the comparison covered what it is about: one-item reads, hits, refusals
    assert one_item > 400 and errors >= 10, (compared, one_item, errors)
    assert refused_nulls >= 5, refused_nulls


SHAPES = [
    pytest.param(Query.of(tags=["t1"]), id="one-tag"),
    pytest.param(Query.of(tags=["t2", "t1"]), id="two-tags"),
    pytest.param(Query.of(tags=["t1"], types=["Kept"]), id="tag-and-type"),
    pytest.param(Query.of(types=["Kept"]), id="one-type"),
    pytest.param(Query.of(types=["Other", "Kept"]), id="two-types"),
    pytest.param(Query.all(), id="all-events"),
]


@pytest.mark.parametrize("query", SHAPES)
def test_a_one_item_read_waits_for_a_writer_of_its_item(engine: Engine, query: Query) -> None:
    """The cap of a one-item read holds its head below an in-flight event that matches it."""
    with engine.connect() as setup:
        EventStore(setup).append(Event("Other", {}, ["t0"]))
        setup.commit()
    tag = f"later:{uuid.uuid4()}"
    with engine.connect() as writer, engine.connect() as later, engine.connect() as reader:
        in_flight = EventStore(writer).append(Event("Kept", {}, ["t1", "t2"]))
        above = EventStore(later).append(Event("Unrelated", {}, [tag]))
        later.commit()
        assert above > in_flight
        result = EventStore(reader).read(query)
        reader.rollback()
        assert result.head is not None and result.head < in_flight, (result.head, in_flight)
        assert all(e.position != in_flight for e in result.events)
        writer.commit()
        result = EventStore(reader).read(query)
        reader.rollback()
        assert in_flight in [e.position for e in result.events]


@pytest.mark.parametrize(
    "items",
    [
        [{"types": [None, "T1"]}],
        [{"types": ["T1", None]}],
        [{"tags": [None]}],
        [{"tags": ["a"]}, {"types": ["T1", None]}],
    ],
)
def test_a_null_tag_or_type_is_refused_before_the_snapshot_probe(
    engine: Engine, items: Any
) -> None:
    """Revision 0007's body turned a null type into a NULL key, and under a transaction snapshot
    its probe then failed on a not-null violation (or on 40001, by the keys' order): the reviewer
    of revision 0010 found the two bodies failing differently. Both are refused up front now."""
    with engine.connect() as reader:
        reader.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        reader.execute(text("SELECT count(*) FROM dcb.events")).scalar_one()  # the snapshot
        with engine.begin() as writer:
            EventStore(writer).append(Event("T1", {}, ["a"]))
        got = _observe(reader, "read_v1", items, None, None, False)
        reader.rollback()
    assert got[:2] == ("error", "22023") and "none of them null" in got[2], got
