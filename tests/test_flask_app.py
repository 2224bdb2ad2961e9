"""The Flask example driven through Flask's test client, with concurrent requests."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text

flask = pytest.importorskip("flask")
pytest.importorskip("flask_sqlalchemy")

from examples.flask_app.app import create_app  # noqa: E402


def test_concurrent_requests_never_overflow_and_rows_match_events(fresh_db_url: str) -> None:
    app = create_app(fresh_db_url)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert client.post("/courses/c1", json={"capacity": 3}).status_code == 201
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def request(i: int) -> None:
        barrier.wait()
        statuses.append(
            app.test_client()
            .post("/courses/c1/subscriptions", json={"student": f"s{i}"})
            .status_code
        )

    threads = [threading.Thread(target=request, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 3 + [409] * 7
    assert len(client.get("/courses/c1").json["students"]) == 3
    engine = create_engine(fresh_db_url)
    with engine.connect() as conn:
        events = conn.execute(
            text("SELECT count(*) FROM dcb.events WHERE type = 'StudentSubscribed'")
        ).scalar_one()
    assert events == 3


def test_a_failed_request_leaves_neither_row_nor_event(fresh_db_url: str) -> None:
    app = create_app(fresh_db_url)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    client.post("/courses/c2", json={"capacity": 5})
    response = client.post("/courses/c2/subscriptions?fail_after_append=1", json={"student": "s1"})
    assert response.status_code == 500
    assert client.get("/courses/c2").json["students"] == []
    engine = create_engine(fresh_db_url)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM dcb.events")).scalar_one() == 1
        )  # CourseDefined
    assert client.post("/courses/c2/subscriptions", json={"student": "s1"}).status_code == 201


def test_without_the_schema_the_app_answers_a_clear_error(blank_db_url: str) -> None:
    app = create_app(blank_db_url)
    response = app.test_client().post("/courses/c1", json={"capacity": 2})
    assert response.status_code == 503
    assert "dcb-store upgrade" in response.json["error"]
