"""Generate docs/api.md from the public API's docstrings: ``python -m dcb_store._apidoc``.

The test suite regenerates it and fails when the committed page differs, so the reference never
drifts from the code.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from types import ModuleType

import dcb_store
from dcb_store import (
    cli,
    following,
    metrics,
    migrations,
    monitoring,
    protocols,
    retrying,
    roles,
    testing,
    tracing,
)

# Each module's section documents its names in full (a name that ``dcb_store`` re-exports gets a
# pointer there), after the module's docstring; the third item lists ``dcb-store`` commands.
_MODULES: list[tuple[ModuleType, list[str], list[str]]] = [
    (dcb_store, list(dcb_store.__all__), []),
    (protocols, list(protocols.__all__), []),
    (migrations, ["upgrade", "downgrade"], []),
    (following, list(following.__all__), ["tail"]),
    (retrying, list(retrying.__all__), []),
    (monitoring, ["LockWatcher"], []),
    (metrics, ["install_prometheus", "PrometheusMetrics"], []),
    (tracing, ["install_opentelemetry"], []),
    (roles, ["grant_writer", "grant_runner", "grant_reader"], []),
    (testing, list(testing.__all__), []),
]


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _entry(name: str, obj: object) -> list[str]:
    """A name's heading, its docstring and, for a class, a line per public method."""
    kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "value"
    sig = _signature(obj) if kind == "function" else ""
    out = [f"### {kind} `{name}{sig}`", "", _doc(obj), ""]
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        for meth_name, meth in inspect.getmembers(obj, inspect.isfunction):
            if meth_name.startswith("_") or meth.__qualname__.split(".")[0] != obj.__name__:
                continue
            asynchronous = "async " if inspect.iscoroutinefunction(meth) else ""
            first_line = _doc(meth).splitlines()[0]
            out += [f"- `{asynchronous}{meth_name}{_signature(meth)}`: {first_line}"]
        out.append("")
    return out


def _command(name: str) -> list[str]:
    """A ``dcb-store`` command's heading, description and options, from the CLI's parser."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command: argparse.ArgumentParser = sub.choices[name]
    out = [f"### command `dcb-store {name}`", "", command.description or "", ""]
    for action in command._actions:
        if action.option_strings and action.dest not in ("help", "url", "debug"):
            out.append(f"- `{'`, `'.join(action.option_strings)}`: {action.help}")
    return [*out, "- `--url`, `--debug`: as for every command (`dcb-store --help`)", ""]


def render() -> str:
    """The whole reference page as Markdown."""
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python -m dcb_store._apidoc`.",
        "",
    ]
    home = {id(getattr(m, n)): m.__name__ for m, names, _ in _MODULES[1:] for n in names}
    for module, names, commands in _MODULES:
        out += [f"## `{module.__name__}`", ""]
        if module is not dcb_store:
            out += [_doc(module), ""]
        pointers = []
        for name in names:
            obj = getattr(module, name)
            if module is dcb_store and id(obj) in home:
                pointers.append(f"`{name}` (`{home[id(obj)]}`)")
            else:
                out += _entry(name, obj)
        if pointers:
            out += ["Also exported here, documented in their modules' sections below:", ""]
            out += [", ".join(pointers) + ".", ""]
        for command in commands:
            out += _command(command)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
