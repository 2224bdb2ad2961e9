"""A progress line for long replays (ProjectionRunner.catch_up): tqdm, or a plain line."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """tqdm when it is installed, else a line on stderr every 10,000 events."""

    def __init__(self, label: str) -> None:
        self.count = 0
        self.label = label
        try:
            from tqdm import tqdm

            self._tqdm: Any = tqdm(desc=label, unit="ev", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm comes with the bench extra
            self._tqdm = None

    def update(self, n: int) -> None:
        self.count += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.count // 10_000 != (self.count - n) // 10_000:  # pragma: no cover
            print(f"{self.label}: {self.count:,} events", file=sys.stderr)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
