"""How a long library call reports progress, shows live previews and learns of Cancel.

Library functions (sampling, VAE chunks, flows, video encode/decode) take a :class:`Hooks` and
call nothing else to talk to the outside world. The defaults do nothing, so they run bare in
scripts and tests; the nodes and the CLI pass ``runtime.hooks.host_hooks()``, which drives
ComfyUI's progress bar, previews and Cancel button, or a tqdm bar and Ctrl-C standalone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1, preview: Any | None = None) -> None:
        """Advance by ``n``; ``preview`` is a PIL image to show. Also an interrupt point."""

    def close(self) -> None: ...

    def __enter__(self) -> "ProgressBar": ...

    def __exit__(self, *exc) -> None: ...


class SilentBar:
    """A progress bar nobody sees."""

    def __init__(self, total: int = 1, desc: str = ""):
        self.total = max(int(total), 1)
        self.value = 0

    def update(self, n: int = 1, preview: Any | None = None) -> None:
        self.value = min(self.value + n, self.total)

    def close(self) -> None:
        pass

    def __enter__(self) -> "SilentBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _never_interrupted() -> None:
    pass


@dataclass(frozen=True)
class Hooks:
    # (total, description) -> a bar; its update() is also where Cancel is noticed
    progress: Callable[[int, str], ProgressBar] = SilentBar
    # raises when the user cancelled; called between steps that have no bar
    check_interrupt: Callable[[], None] = _never_interrupted
    # whether anyone will look at previews (drawing them costs time)
    previews: bool = False


NO_HOOKS = Hooks()
