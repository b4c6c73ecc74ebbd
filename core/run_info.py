"""One sampling run of one model object, as the model's patches and family see it.

The sampler makes one :class:`RunInfo` per expert per run and hands it to
``VideoModel.run(run)``; patches read the schedule from it (a step cache must know the first
and last steps), families keep per-run values in ``state`` (text keys/values that are the same
at every step), and both register what to do when the run ends (``on_finish``: log lines).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunInfo:
    """One sampling run of one model object (one expert), as its patches and family see it."""

    sigmas: tuple[float, ...] = ()   # the run's noise levels, first to last (the last is 0)
    label: str = "model"             # for log lines, e.g. "high-noise expert"
    # Per-run values the family may keep between calls (e.g. the text's cross-attention keys
    # and values, which are the same at every step). Dropped when the run ends.
    state: dict[str, Any] = field(default_factory=dict)
    # Forward options patches set for the family (attention backend, compiled blocks ...).
    options: dict[str, Any] = field(default_factory=dict)
    _finishers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def steps(self) -> int:
        return max(len(self.sigmas) - 1, 0)

    def step_of(self, sigma: float) -> int | None:
        """0-based index of the step that evaluates at ``sigma`` (None: not on the schedule)."""
        for index, value in enumerate(self.sigmas[:-1]):
            if abs(float(value) - float(sigma)) <= 1e-7:
                return index
        return None

    def on_finish(self, callback: Callable[[], None]) -> None:
        self._finishers.append(callback)

    def finish(self) -> None:
        """End of the run: callbacks (log lines) run once, per-run state is released."""
        finishers, self._finishers = self._finishers, []
        for callback in finishers:
            callback()
        self.state.clear()
