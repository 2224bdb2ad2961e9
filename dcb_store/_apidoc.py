"""Generate docs/api.md from the public API's docstrings: ``python -m dcb_store._apidoc``.

The test suite regenerates it and fails when the committed page differs, so the reference never
drifts from the code.
"""

from __future__ import annotations

import inspect
import sys

import dcb_store
from dcb_store import following, metrics, migrations, monitoring, retrying, roles, testing, tracing

_MODULES = [
    ("dcb_store", dcb_store, list(dcb_store.__all__)),
    ("dcb_store.migrations", migrations, ["upgrade", "downgrade"]),
    ("dcb_store.following", following, ["subscribe", "Subscription", "ProjectionRunner"]),
    (
        "dcb_store.retrying",
        retrying,
        ["run_in_transaction", "run_in_transaction_async", "RetryPolicy"],
    ),
    ("dcb_store.monitoring", monitoring, ["LockWatcher"]),
    ("dcb_store.metrics", metrics, ["install_prometheus", "PrometheusMetrics"]),
    ("dcb_store.tracing", tracing, ["install_opentelemetry"]),
    ("dcb_store.roles", roles, ["grant_writer", "grant_runner", "grant_reader"]),
    ("dcb_store.testing", testing, ["InMemoryEventStore"]),
]


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def render() -> str:
    """The whole reference page as Markdown."""
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python -m dcb_store._apidoc`.",
        "",
    ]
    seen: set[int] = set()
    for title, module, names in _MODULES:
        out += [f"## `{title}`", ""]
        for name in names:
            obj = getattr(module, name)
            if id(obj) in seen and title != "dcb_store":
                continue
            seen.add(id(obj))
            kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "value"
            sig = _signature(obj) if kind == "function" else ""
            out += [f"### {kind} `{name}{sig}`", "", _doc(obj), ""]
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for meth_name, meth in inspect.getmembers(obj, inspect.isfunction):
                    if meth_name.startswith("_") or meth.__qualname__.split(".")[0] != obj.__name__:
                        continue
                    out += [f"- `{meth_name}{_signature(meth)}`: {_doc(meth).splitlines()[0]}"]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
