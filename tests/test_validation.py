"""Input: what the store takes verbatim, what it rejects, and a database without the schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    Event,
    EventStore,
    Query,
    QueryItem,
    SchemaMissingError,
)


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


def test_a_store_takes_only_a_session_or_a_connection() -> None:
    # what each store rejects at append and read: the contract (dcb_store.contract)
    with pytest.raises(TypeError):
        EventStore(object())  # type: ignore[arg-type]


def test_missing_schema_says_to_run_the_migrations(server_url: str) -> None:
    eng = create_engine(server_url)
    with Session(eng) as s, pytest.raises(SchemaMissingError, match="upgrade"):
        EventStore(s).append(Event("A"))
    eng.dispose()
