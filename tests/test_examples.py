"""The examples run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from examples.unit_of_work.app import setup, subscribe

ROOT = Path(__file__).resolve().parent.parent


def test_unit_of_work_keeps_app_rows_and_events_together_under_concurrency(engine: Engine) -> None:
    setup(engine, "c1", capacity=4)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(subscribe(engine, "c1", f"s{i}")))
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 4
    with engine.connect() as conn:
        cards = conn.execute(text("SELECT count(*) FROM seat_cards")).scalar_one()
        events = conn.execute(
            text("SELECT count(*) FROM dcb.events WHERE type = 'StudentSubscribed'")
        ).scalar_one()
    assert cards == events == 4


@pytest.mark.parametrize("example", ["flask_app", "fastapi_app", "unit_of_work"])
def test_each_example_runs_with_its_one_documented_command(example: str, fresh_db_url: str) -> None:
    args = [sys.executable, "-m", f"examples.{example}"]
    if example != "unit_of_work":
        args.append("--demo")
    done = subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": fresh_db_url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "seats" in done.stdout
