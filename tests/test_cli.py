"""The command line as a user runs it: upgrade, sql, demo, locks, bench --quick."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from dcb_store.cli import build_parser, main
from tests.host_project import dcb_store_cli, one_clear_line, scalar


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


def test_help_for_every_command_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) >= {"upgrade", "downgrade", "sql", "demo", "locks", "tail", "bench"}
    for name, command in commands.items():
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        if name == "bench":  # its options belong to the benchmark harness
            continue
        for action in command._actions:
            assert action.help, f"dcb-store {name} {action.option_strings or action.dest}"
    assert "usage: dcb-store" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["upgrade", "--url", "not a url"], "not a database URL"),
        (["upgrade", "--url", "sqlite:///x.db"], "needs PostgreSQL"),
        (["upgrade", "--url", "postgresql://postgres@127.0.0.1:1/x"], "port 1 failed"),
        (["upgrade", "nosuchrevision"], "nosuchrevision"),
        (["downgrade", "nosuchrevision"], "nosuchrevision"),
        (["tail", "--count", "1"], "run `dcb-store upgrade` first"),
        (["locks"], "run `dcb-store upgrade` first"),
        (["demo", "--students", "3", "--capacity", "4"], "--capacity 4 is more than"),
    ],
)
def test_every_error_is_one_clear_line(args: list[str], needle: str, blank_db_url: str) -> None:
    if "--url" not in args:
        args = [*args, "--url", blank_db_url]  # options after the command
    one_clear_line(dcb_store_cli(*args), needle)


def test_missing_database_and_role_are_one_line(server_url: str) -> None:
    url = make_url(server_url)
    database = url.set(database="dcb_no_such_database").render_as_string(hide_password=False)
    one_clear_line(dcb_store_cli("--url", database, "upgrade"), "dcb_no_such_database")
    role = url.set(username="dcb_no_such_role").render_as_string(hide_password=False)
    one_clear_line(dcb_store_cli("upgrade", "--url", role), "dcb_no_such_role")


def test_debug_shows_the_traceback() -> None:
    done = dcb_store_cli("upgrade", "--url", "not a url", "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_invalid_numbers_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["demo", "--students", "0"],
        ["demo", "--capacity", "x"],
        ["tail", "--poll", "-1"],
    ):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2
    assert "must be between 1 and 50" in capsys.readouterr().err


def test_url_spellings_are_normalized(
    blank_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_url(blank_db_url)
    for scheme in ("postgres", "postgresql", "postgresql+psycopg2"):
        spelled = url.set(drivername=scheme).render_as_string(hide_password=False)
        assert main(["upgrade", "--url", spelled]) == 0
    assert "dcb_store schema is at" in capsys.readouterr().out


def test_embedded_url_gives_a_fresh_database_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DCB_STORE_EMBEDDED_DIR", str(tmp_path / "pg"))
    first = dcb_store_cli("embedded-url")
    second = dcb_store_cli("embedded-url")
    try:
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        url, other = first.stdout.strip(), second.stdout.strip()
        assert url != other and url.startswith("postgresql+psycopg://")
        assert main(["upgrade", "--url", url]) == 0
        assert scalar(other, "SELECT to_regclass('dcb.events') IS NULL")  # untouched
    finally:
        from dcb_store import embedded

        _url, server = embedded.start(tmp_path / "pg")
        server.cleanup()


@pytest.fixture
def bench_databases(server_url: str) -> Iterator[None]:
    """The harness makes databases of fixed names on the server: dropped after the test."""
    yield
    from dcb_store.bench.harness import BENCH_DB
    from dcb_store.bench.peer import PEER_DB, PEER_GENERIC_DB

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in (BENCH_DB, PEER_DB, PEER_GENERIC_DB):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.slow
@pytest.mark.usefixtures("bench_databases")
def test_short_benchmark_runs_end_to_end(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["--url", server_url, "bench", "--quick", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    scenarios = {r["scenario"] for r in rows}
    assert {"plain INSERT+COMMIT", "append + condition", "read one tag's 10 events"} <= scenarios
    assert all(r["ops_per_s"] > 0 for r in rows)
    polls = {"hot tag: caught-up poll (after = head)", "hot tag: a subscription's caught-up poll"}
    assert all(r["events_per_s"] > 0 for r in rows if r["scenario"] not in polls)
    # the hot tag: two pages of 100 and a caught-up poll (a Session's read, a subscription's
    # own poll), each with its latencies
    hot = {r["scenario"]: r for r in rows if r["scenario"].startswith("hot tag:")}
    assert set(hot) == {
        "hot tag: page of 100 near the end",
        "hot tag: page of 100 from the start",
        *polls,
    }
    assert all(r["extra"]["p50_ms"] > 0 and r["extra"]["p99_ms"] > 0 for r in hot.values())
    assert all(hot[poll]["events_per_s"] == 0 for poll in polls)
    # every append scenario, the peer's too (when installed), takes turns in the same rounds
    # and reports the CPU of one append on the client and on the server
    appends = {
        "plain INSERT+COMMIT",
        "INSERT+COMMIT via Session",
        "append",
        "append + condition",
        "append + condition + lock: tags",
        "append (Connection)",
        "append + condition (Connection)",
        "append (autocommit Connection)",
        "append + condition (autocommit Connection)",
    }
    if importlib.util.find_spec("eventsourcing") is not None:
        appends |= {
            "peer: eventsourcing append",
            "peer: eventsourcing append + condition",
            # on a database of its own set to plan_cache_mode = force_generic_plan
            "peer: eventsourcing append + condition, generic plans",
        }
        assert "peer: read one tag's 10 events" in scenarios
    assert {(r["scenario"], r["connections"]) for r in rows if r["scenario"] in appends} == {
        (name, n) for name in appends for n in (1, 4)
    }
    engine = create_engine(server_url)
    with engine.connect() as conn:  # the server runs on this machine when its backend is here
        local = Path(f"/proc/{conn.execute(text('SELECT pg_backend_pid()')).scalar()}").exists()
        # the tuned peer's database holds the setting that makes it the peer at its best
        from dcb_store.bench.peer import PEER_GENERIC_DB

        tuned = conn.execute(
            text(
                "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
                "ON d.oid = s.setdatabase WHERE d.datname = :name"
            ),
            {"name": PEER_GENERIC_DB},
        ).scalar()
        if "peer: eventsourcing append" in appends:
            assert tuned == ["plan_cache_mode=force_generic_plan"]
    engine.dispose()
    for r in rows:
        if r["scenario"] in appends:
            assert r["client_us_per_op"] > 0, r
            if local:
                assert r["server_us_per_op"] > 0, r
            else:
                assert r["server_us_per_op"] is None, r
        else:
            assert r["client_us_per_op"] is None, r
    assert (out / "throughput.png").stat().st_size > 1000
