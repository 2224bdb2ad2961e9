"""The command line as a user runs it: upgrade, sql, demo, locks, bench --quick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dcb_store.cli import main


def test_sql_prints_the_migration_without_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE dcb.events" in out and "CREATE FUNCTION dcb.append_v1" in out


def test_upgrade_demo_and_locks(
    fresh_db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_db_url)
    assert main(["upgrade"]) == 0
    assert main(["demo", "--students", "8", "--capacity", "3"]) == 0
    out = capsys.readouterr().out
    assert "The course never overflowed." in out and out.count(": subscribed") == 3
    engine = create_engine(fresh_db_url)
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM dcb.events WHERE type = 'StudentSubscribed'")
        ).scalar_one()
    engine.dispose()
    assert n == 3
    assert main(["locks"]) == 0
    assert "0 dcb_store advisory locks" in capsys.readouterr().out
    assert main(["tail", "--type", "StudentSubscribed", "--count", "3", "--poll", "0.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("StudentSubscribed" in line for line in lines)


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("upgrade", "sql", "demo", "locks", "tail", "bench"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
    assert "usage: dcb-store" in capsys.readouterr().out


@pytest.mark.slow
def test_short_benchmark_runs_end_to_end(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["--url", server_url, "bench", "--quick", "--no-peer", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    scenarios = {r["scenario"] for r in rows}
    assert {"plain INSERT+COMMIT", "append + condition", "read one tag's 10 events"} <= scenarios
    assert all(r["events_per_s"] > 0 for r in rows)
    assert (out / "throughput.png").stat().st_size > 1000
