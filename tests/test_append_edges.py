"""Where append_v4 and append_v5 differ in form from append_v3 (found by adversarial reviews):
a cleared marker setting, ids that are not strings, null tags in a condition. Both versions
stay callable (code of the previous release calls append_v4), so both are tested."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, TextClause, text
from sqlalchemy.exc import DBAPIError

from dcb_store import Event, EventStore

FUNCTIONS = ["append_v4", "append_v5"]


def _append(function: str) -> TextClause:
    return text(
        f"SELECT outcome, last_position FROM dcb.{function}(CAST(:e AS jsonb), '{{}}', "
        "CAST(:c AS jsonb), NULL)"
    )


@pytest.mark.parametrize(
    "clear", ["RESET ALL", "SET LOCAL dcb.in_flight_marker = ''", "SET dcb.in_flight_marker = ''"]
)
def test_a_cleared_marker_setting_does_not_break_the_next_append(
    engine: Engine, clear: str
) -> None:
    with engine.connect() as conn:
        store = EventStore(conn)
        first = store.append(Event("E", {}, ["t:1"]))
        conn.execute(text(clear))
        second = store.append(Event("E", {}, ["t:1"]))  # same keys, same transaction
        assert second == first + 1
        conn.commit()
    with engine.connect() as conn:
        traces = conn.execute(text("SELECT count(DISTINCT xid) FROM dcb.append_traces")).scalar()
        assert traces == 1  # one transaction, its first rows kept


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("bad_id", ["[]", "[null]", "{}", "7"])
def test_an_id_that_is_not_a_uuid_string_is_refused(
    engine: Engine, bad_id: str, function: str
) -> None:
    with engine.connect() as conn:
        with pytest.raises(DBAPIError) as refused:
            conn.execute(
                _append(function),
                {"e": f'[{{"type": "E", "data": {{}}, "id": {bad_id}}}]', "c": None},
            )
        assert getattr(refused.value.orig, "sqlstate", None) == "22P02"
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM dcb.events")).scalar() == 0


@pytest.mark.parametrize(
    "items",
    [
        '[{"tags": [null]}]',
        '[{"types": [null]}]',
        '[{"tags": ["a", null]}]',
        '[{"tags": ["a"]}, {"tags": [null]}]',
        '[{"types": ["T"]}, {"types": ["U", null]}]',
    ],
)
@pytest.mark.parametrize("level", ["READ COMMITTED", "REPEATABLE READ"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_null_tags_or_types_in_a_condition_are_invalid(
    engine: Engine, items: str, level: str, function: str
) -> None:
    with engine.connect().execution_options(isolation_level=level) as conn:
        with pytest.raises(DBAPIError) as refused:
            conn.execute(
                _append(function),
                {"e": '[{"type": "E", "data": {}}]', "c": f'{{"items": {items}}}'},
            )
        assert getattr(refused.value.orig, "sqlstate", None) == "22023"


@pytest.mark.parametrize(
    ("events", "condition"),
    [
        # event tags that are not an array, and a second fault: the first fault named is v4's
        ('[{"type": "T", "tags": "x", "data": {}, "id": "bad"}]', '{"items": [{"types": ["T"]}]}'),
        ('[{"type": "T", "tags": "x", "data": {}}]', '{"items": [{"tags": [null]}]}'),
        ('[{"type": "T", "tags": 7, "data": {}}]', '"null"'),
        ('[{"type": "T", "tags": null, "data": {}}]', '{"items": [{"tags": ["a"]}]}'),
        ('[{"type": "T", "data": {}}]', '{"items": [{"tags": ["a"]}]}'),
    ],
)
def test_append_v5_names_the_fault_append_v4_names(
    engine: Engine, events: str, condition: str
) -> None:
    """Found by review: v5 read the event's tags first, so two faults gave another error."""
    answers = []
    for function in FUNCTIONS:
        with engine.connect() as conn:
            try:
                row = conn.execute(_append(function), {"e": events, "c": condition}).one()
                answers.append(("ok", row[0]))
            except DBAPIError as exc:
                orig = exc.orig
                answers.append((getattr(orig, "sqlstate", None), str(orig).splitlines()[0]))
            conn.rollback()
    assert answers[0] == answers[1]
