"""The benchmark's report: JSON and a PNG plot of the rows, and the summary against the targets."""

from __future__ import annotations

import itertools
import json
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dcb_store.bench._common import (
    APPEND_AUTOCOMMIT,
    APPEND_CONDITION,
    APPEND_CONDITION_AUTOCOMMIT,
    APPEND_CONDITION_CONNECTION,
    APPEND_CONNECTION,
    APPEND_LOCK,
    BASELINE,
    HOT_TAG_FOLLOWER_POLL,
    HOT_TAG_NEAR_END,
    HOT_TAG_POLL,
    HOT_TAG_START,
    PEER,
    PEER_APPEND,
    PEER_APPEND_CONDITION,
    PEER_APPEND_CONDITION_GENERIC,
    READ_ONE_TAG,
    SESSION_BASELINE,
    STREAM_ALL,
    Row,
)

__all__ = ["summary", "write_report"]


def write_report(rows: list[Row], out: Path) -> None:
    """JSON with every row and the machine, and a PNG of throughput against connections."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "rows": [
            {
                **asdict(r),
                "ratio_to_baseline": r.ratio,
                "ratio_to_session_baseline": r.session_ratio,
            }
            for r in rows
        ],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the bench extra is optional
        return
    fig, ax = plt.subplots(figsize=(10, 5.5))
    scenarios = sorted(
        {
            r.scenario
            for r in rows
            if r.batch == 1 and len({x.connections for x in rows if x.scenario == r.scenario}) > 1
        }
    )
    colors = itertools.cycle(plt.get_cmap("tab20")(i) for i in range(20))
    for scenario in scenarios:
        points = sorted(
            (r.connections, r.events_per_s) for r in rows if r.scenario == scenario and r.batch == 1
        )
        # baselines black, the peer dotted, this library solid in colour
        if scenario in (BASELINE, SESSION_BASELINE):
            style: dict[str, Any] = {
                "color": "black",
                "linestyle": "-" if scenario == BASELINE else "--",
            }
        else:
            dotted = scenario.startswith(PEER)
            style = {"color": next(colors), "linestyle": ":" if dotted else "-"}
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", label=scenario, **style)
    ax.set_xlabel("connections")
    ax.set_ylabel("events/s (one event per append)")
    ax.set_title("dcb_store append throughput vs plain INSERT+COMMIT, same server")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)


def summary(rows: list[Row]) -> str:
    """The target checks of the benchmark issue, from measured rows."""

    def find(s: str, n: int, b: int = 1) -> Row | None:
        return next(
            (r for r in rows if r.scenario == s and r.connections == n and r.batch == b), None
        )

    lines = []
    for n in (1, 8):
        r = find(APPEND_CONDITION, n)
        if r and r.ratio is not None:
            via = f", {r.session_ratio:.0%} of it via Session" if r.session_ratio else ""
            lines.append(
                f"conditional append vs baseline at {n} conn: {r.ratio:.0%}{via} (target >= 80%)"
            )
    r1, r8 = find(APPEND_CONDITION, 1), find(APPEND_CONDITION, 8)
    if r1 and r8:
        lines.append(
            f"8 connections vs 1: {r8.events_per_s / r1.events_per_s:.2f}x (target >= 2.5x)"
        )
    for n in (1, 8):
        c, lk = find(APPEND_CONDITION, n), find(APPEND_LOCK, n)
        if c and lk:
            lines.append(
                f"lock: tags cost at {n} conn: "
                f"{1 - lk.events_per_s / c.events_per_s:.0%} (target <= 10%)"
            )
    rd = next((r for r in rows if r.scenario == READ_ONE_TAG), None)
    if rd:
        lines.append(
            f"read one tag's 10 of {rd.extra['store_events']:,}: p50 {rd.extra['p50_ms']} ms, "
            f"p99 {rd.extra['p99_ms']} ms (target p50 < 1 ms)"
        )
    for name in (HOT_TAG_NEAR_END, HOT_TAG_START, HOT_TAG_POLL, HOT_TAG_FOLLOWER_POLL):
        hot = next((r for r in rows if r.scenario == name), None)
        if hot:
            lines.append(f"{name}: p50 {hot.extra['p50_ms']} ms, p99 {hot.extra['p99_ms']} ms")
    lines += _cpu_lines(rows, find)
    st = next((r for r in rows if r.scenario == STREAM_ALL), None)
    if st:
        lines.append(f"streaming: {st.events_per_s:,.0f} events/s (target >= 100,000)")
    return "\n".join(lines)


def _cpu_lines(rows: list[Row], find: Callable[[str, int], Row | None]) -> list[str]:
    """Per connection count: events/s and CPU per one-event append, ours next to the peer's."""

    def us(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    lines = []
    for n in sorted({r.connections for r in rows if r.client_us_per_op is not None}):
        lines.append(f"one-event appends at {n} conn: events/s, CPU per append (client/server µs)")
        for name in (
            BASELINE,
            APPEND_CONNECTION,
            APPEND_CONDITION_CONNECTION,
            APPEND_AUTOCOMMIT,
            APPEND_CONDITION_AUTOCOMMIT,
            APPEND_CONDITION,
            PEER_APPEND,
            PEER_APPEND_CONDITION,
            PEER_APPEND_CONDITION_GENERIC,
        ):
            r = find(name, n)
            if r and r.client_us_per_op is not None:
                lines.append(
                    f"  {name:<38} {r.events_per_s:8.0f}  "
                    f"{us(r.client_us_per_op):>5} / {us(r.server_us_per_op):>5}"
                )
        for label, mine, theirs in (
            (
                "conditional, ours (Connection) / peer",
                APPEND_CONDITION_CONNECTION,
                PEER_APPEND_CONDITION,
            ),
            (
                "conditional, ours (autocommit) / peer",
                APPEND_CONDITION_AUTOCOMMIT,
                PEER_APPEND_CONDITION,
            ),
            ("plain, ours (Connection) / peer", APPEND_CONNECTION, PEER_APPEND),
            ("plain, ours (autocommit) / peer", APPEND_AUTOCOMMIT, PEER_APPEND),
            (
                "conditional, ours (Connection) / peer with generic plans",
                APPEND_CONDITION_CONNECTION,
                PEER_APPEND_CONDITION_GENERIC,
            ),
            (
                "conditional, ours (autocommit) / peer with generic plans",
                APPEND_CONDITION_AUTOCOMMIT,
                PEER_APPEND_CONDITION_GENERIC,
            ),
        ):
            ours, peer = find(mine, n), find(theirs, n)
            if ours and peer:
                lines.append(f"  {label}: {ours.events_per_s / peer.events_per_s:.2f}x events/s")
    return lines
