"""Decision models: several projections answered by one read, and the condition to append with.

``store.project([p1, p2, ...])`` reads once with the union of the projections' queries, folds
every event into each projection whose query matches it, and returns the states together with
``AppendCondition(union query, after=read.head)``: append with it, and the append fails if any
event that would have changed any of the states was stored since.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dcb_store.conditions import AppendCondition
from dcb_store.events import SequencedEvent
from dcb_store.queries import Query
from dcb_store.reading import ReadResult

__all__ = ["Projection", "fold"]

S = TypeVar("S")


@dataclass(frozen=True)
class Projection(Generic[S]):
    """A state built from the events matching ``query``, starting at ``initial``."""

    query: Query
    initial: S
    apply: Callable[[S, SequencedEvent], S]


def union(projections: Sequence[Projection[Any]]) -> Query:
    """The query that matches every event any of the projections needs."""
    if not projections:
        raise ValueError("project() needs at least one projection")
    return Query(items=[item for p in projections for item in p.query.items])


def fold(
    projections: Sequence[Projection[Any]], result: ReadResult
) -> tuple[list[Any], AppendCondition]:
    """The projections' states over ``result``, and the condition for a decision made from it."""
    states = [p.initial for p in projections]
    for event in result:
        for i, p in enumerate(projections):
            if p.query.matches(event.type, event.tags):
                states[i] = p.apply(states[i], event)
    return states, AppendCondition(union(projections), result.head)
