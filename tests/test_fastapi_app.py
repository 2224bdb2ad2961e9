"""The FastAPI example under a real uvicorn server on 127.0.0.1, with concurrent requests."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, text

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from examples.fastapi_app.__main__ import race  # noqa: E402
from examples.fastapi_app.app import create_app  # noqa: E402
from examples.fastapi_app.serving import running  # noqa: E402


def test_concurrent_requests_never_overflow_and_rows_match_events(fresh_db_url: str) -> None:
    with running(create_app(fresh_db_url)) as base:
        statuses, enrolled = asyncio.run(race(base, students=16, capacity=4))
        assert (
            httpx.post(f"{base}/courses/nope/subscriptions", json={"student": "x"}).status_code
            == 404
        )
        assert httpx.post(f"{base}/courses/c1", json={"capacity": 0}).status_code == 422
    assert sorted(statuses) == [201] * 4 + [409] * 12
    assert len(enrolled) == 4
    engine = create_engine(fresh_db_url)
    with engine.connect() as conn:
        events = conn.execute(
            text("SELECT count(*) FROM dcb.events WHERE type = 'StudentSubscribed'")
        ).scalar_one()
        rows = conn.execute(text("SELECT count(*) FROM fastapi_enrolments")).scalar_one()
    engine.dispose()
    assert events == rows == 4


def test_without_the_schema_the_app_answers_a_clear_error(blank_db_url: str) -> None:
    with running(create_app(blank_db_url)) as base:
        response = httpx.post(f"{base}/courses/c1", json={"capacity": 2})
    assert response.status_code == 503
    assert "dcb-store upgrade" in response.json()["error"]
