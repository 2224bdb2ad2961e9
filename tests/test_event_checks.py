"""The events table's one CHECK (revision 0009) refuses exactly what revision 0006's eight did.

Revision 0009 folded the eight CHECK constraints into one call of ``dcb.event_valid_v1``
because PostgreSQL prepares every CHECK again for each INSERT statement. The rules must not
move: every candidate row below is judged by the eight expressions of revision 0006 (copied
here as they were) and by the function, and both must agree; the candidates sit on each
rule's edges.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

#: Revision 0006's checks on (tags, data, metadata); a NULL result passes, as in a CHECK.
OLD_RULES = [
    "pg_catalog.cardinality(tags) <= 100",
    """CASE WHEN pg_catalog.array_ndims(tags) > 1 THEN false
            ELSE pg_catalog.array_position(tags, NULL) IS NULL AND NOT tags && '{""}'::text[]
       END""",
    "dcb.tags_valid_v1(tags)",
    "metadata IS NULL OR pg_catalog.jsonb_typeof(metadata) = 'object'",
    "pg_catalog.pg_column_size(data) <= 8388608",
    "pg_catalog.pg_column_size(metadata) <= 524288",
    """NOT pg_catalog.jsonb_path_exists(data,
        'strict $.**{64} ? (@.type() == "array" || @.type() == "object")')""",
    """metadata IS NULL OR NOT pg_catalog.jsonb_path_exists(metadata,
        'strict $.**{64} ? (@.type() == "array" || @.type() == "object")')""",
]

OLD = f"""
SELECT {" AND ".join(f"coalesce(({rule}), true)" for rule in OLD_RULES)}
  FROM (SELECT CAST(:tags AS text[]) AS tags, CAST(:data AS jsonb) AS data,
               CAST(:metadata AS jsonb) AS metadata) row
"""
NEW = (
    "SELECT dcb.event_valid_v1(CAST(:tags AS text[]), CAST(:data AS jsonb), "
    "CAST(:metadata AS jsonb))"
)
INSERT = "INSERT INTO dcb.events (type, tags, data, metadata) VALUES ('P', {values})"


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _candidates() -> list[tuple[str, str, str | None]]:
    tag_lists = [
        "{}",
        "{a}",
        "{a,b}",
        "{" + ",".join(f"t{i}" for i in range(100)) + "}",
        "{" + ",".join(f"t{i}" for i in range(101)) + "}",
        "{{a,b},{c,d}}",
        "{a,NULL}",
        '{a,""}',
        '{""}',
        "{" + "x" * 1024 + "}",
        "{" + "x" * 1025 + "}",
        "{" + "é" * 1024 + "}",  # characters, not bytes
        "{lock:k}",
        "{a,lock:k}",
        "{Lock:k}",
        "{xlock:k}",
        '{"lock :k"}',
        "[0:1]={a,b}",  # another lower bound
    ]
    datas = [
        "{}",
        "[]",
        "1",
        '"s"',
        "null",
        json.dumps(nested(63)),
        json.dumps(nested(64)),
        json.dumps(nested(65)),
        json.dumps({"a": nested(64)}),
    ]
    metadatas: list[str | None] = [
        None,
        "null",
        "{}",
        "[]",
        '"s"',
        "1",
        json.dumps({"m": nested(63)}),
        json.dumps({"m": nested(64)}),
        json.dumps({"s": "x" * 524_300}),
        json.dumps({"s": "x" * 524_000}),
    ]
    rows = [(t, "{}", None) for t in tag_lists]
    rows += [("{a}", d, None) for d in datas]
    rows += [("{a}", "{}", m) for m in metadatas]
    rows += [("{lock:k}", json.dumps(nested(70)), "[]")]  # several rules broken at once
    return rows


def _judge(conn: Any, statement: str, row: tuple[str, str, str | None]) -> bool:
    params = {"tags": row[0], "data": row[1], "metadata": row[2]}
    savepoint = conn.begin_nested()
    try:
        verdict = bool(conn.execute(text(statement), params).scalar_one())
    except DBAPIError as error:
        savepoint.rollback()
        assert error.orig.sqlstate == "23514", error  # type: ignore[union-attr]
        return False
    savepoint.commit()
    return verdict


def test_the_one_check_refuses_what_the_eight_refused(session: Session) -> None:
    conn = session.connection()
    differ = []
    for row in _candidates():
        old, new = _judge(conn, OLD, row), _judge(conn, NEW, row)
        if old != new:
            differ.append((row[0][:40], row[1][:40], (row[2] or "")[:40], old, new))
    assert not differ, differ
    # the candidates reach both sides of the rules
    verdicts = {_judge(conn, OLD, row) for row in _candidates()}
    assert verdicts == {True, False}


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        ("ARRAY['lock:k'], '{}', NULL", 'no stored tag starts with "lock:"'),
        ("ARRAY['a', ''], '{}', NULL", "tags are not NULL or empty"),
        ("'{}', '{}', '[1]'", "metadata is a JSON object or NULL"),
    ],
)
def test_a_refused_row_names_the_constraint_and_its_rule(
    engine: Engine, values: str, rule: str
) -> None:
    with engine.connect() as conn, pytest.raises(DBAPIError) as info:
        conn.execute(text(INSERT.format(values=values)))
    diag = info.value.orig.diag  # type: ignore[union-attr]
    assert info.value.orig.sqlstate == "23514"  # type: ignore[union-attr]
    assert diag.constraint_name == "events_valid"
    assert diag.table_name == "events"
    assert diag.message_detail == rule


def test_the_table_has_one_check_besides_the_type_check(engine: Engine) -> None:
    with engine.connect() as conn:
        checks = dict(
            conn.execute(
                text(
                    "SELECT conname, convalidated FROM pg_constraint "
                    "WHERE conrelid = 'dcb.events'::regclass AND contype = 'c'"
                )
            ).all()
        )
    # every CHECK is prepared again per INSERT statement: a new rule goes into event_valid_v1
    assert checks == {"events_type_check": True, "events_valid": False}
